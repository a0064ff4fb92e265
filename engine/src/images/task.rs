//! TaskCoreEntry.task_state of core-PID.img (CRIU's compel task states):
//! what the task was at dump time, which decides how restore brings it
//! back and how show describes it.

pub const TASK_ALIVE: u32 = 0x1;
pub const TASK_DEAD: u32 = 0x2;
pub const TASK_STOPPED: u32 = 0x3;
pub const TASK_HELPER: u32 = 0x4;
pub const TASK_THREAD: u32 = 0x5;
pub const TASK_ZOMBIE: u32 = 0x6;
