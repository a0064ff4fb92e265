//! The tree's own namespaces (utsns-N.img, ipcns-var-N.img, pidns-N.img,
//! timens-N.img) for `ckpt show`: what each holds and which tasks are in
//! it. Tasks in no namespace image of a kind are in the host's.

use serde_json::{json, Value};

use crate::images::pb;
use crate::images::set::ImageSet;

/// The pids of the tasks whose ids put them in namespace `id` of `kind`.
fn members(set: &ImageSet, kind: &str, id: u32) -> Vec<u32> {
    set.tasks
        .iter()
        .filter(|t| {
            t.ids.as_ref().ok().is_some_and(|ids| {
                let theirs = match kind {
                    "uts" => ids.uts_ns_id,
                    "ipc" => ids.ipc_ns_id,
                    "pid" => ids.pid_ns_id,
                    _ => ids.time_ns_id,
                };
                theirs == Some(id)
            })
        })
        .map(|t| t.tree.pid)
        .collect()
}

fn tasks_text(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "no task".to_string();
    }
    let p: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("tasks {}", p.join(", "))
}

fn ipc_vars(v: &pb::IpcVarEntry) -> String {
    let sem: Vec<String> = v.sem_ctls.iter().map(u32::to_string).collect();
    format!(
        "sem {}  msgmax {}  msgmnb {}  msgmni {}  shmmax {}  shmall {}  shmmni {}  shm_rmid_forced {}  mqueue {}/{}/{}",
        sem.join(" "),
        v.msg_ctlmax,
        v.msg_ctlmnb,
        v.msg_ctlmni,
        v.shm_ctlmax,
        v.shm_ctlall,
        v.shm_ctlmni,
        v.shm_rmid_forced,
        v.mq_queues_max,
        v.mq_msg_max,
        v.mq_msgsize_max
    )
}

/// The text section: (indent, line) pairs; empty without namespace images.
pub fn text(set: &ImageSet) -> Vec<(usize, String)> {
    let ns = &set.namespaces;
    if ns.is_empty() {
        return Vec::new();
    }
    let mut out = vec![(0, "Namespaces of the tree's own".to_string())];
    for (&id, part) in &ns.uts {
        let what = match part {
            Ok(u) => format!("hostname {:?}  domainname {:?}", u.nodename, u.domainname),
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "uts ns {id}: {what}  ({})",
                tasks_text(&members(set, "uts", id))
            ),
        ));
    }
    for (&id, part) in &ns.ipc {
        let what = match part {
            Ok(v) => ipc_vars(v),
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "ipc ns {id}: {what}  ({})",
                tasks_text(&members(set, "ipc", id))
            ),
        ));
    }
    for (&id, part) in &ns.pid {
        let what = match part {
            Ok(p) => match &p.ext_key {
                Some(k) => format!("external, key {k:?}"),
                None => {
                    "made by the restore, its init the tree's root (pids as seen inside)".into()
                }
            },
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "pid ns {id}: {what}  ({})",
                tasks_text(&members(set, "pid", id))
            ),
        ));
    }
    for (&id, part) in &ns.time {
        let what = match part {
            Ok(t) => format!(
                "monotonic offset {}.{:09} s  boottime offset {}.{:09} s",
                t.monotonic.tv_sec as i64,
                t.monotonic.tv_nsec,
                t.boottime.tv_sec as i64,
                t.boottime.tv_nsec
            ),
            Err(e) => e.to_string(),
        };
        out.push((
            2,
            format!(
                "time ns {id}: {what}  ({})",
                tasks_text(&members(set, "time", id))
            ),
        ));
    }
    out
}

/// The JSON section.
pub fn json(set: &ImageSet) -> Value {
    let ns = &set.namespaces;
    let ok = |r: Result<Value, String>| r.unwrap_or_else(|e| json!({ "problem": e }));
    let uts: Vec<Value> = ns
        .uts
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "uts", id),
                "value": ok(p.as_ref().map(|u| json!({"nodename": u.nodename, "domainname": u.domainname})).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let ipc: Vec<Value> = ns
        .ipc
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "ipc", id),
                "value": ok(p.as_ref().map(|v| json!({
                    "sem": v.sem_ctls, "msgmax": v.msg_ctlmax, "msgmnb": v.msg_ctlmnb,
                    "msgmni": v.msg_ctlmni, "shmmax": v.shm_ctlmax, "shmall": v.shm_ctlall,
                    "shmmni": v.shm_ctlmni, "shm_rmid_forced": v.shm_rmid_forced,
                    "mq_queues_max": v.mq_queues_max, "mq_msg_max": v.mq_msg_max,
                    "mq_msgsize_max": v.mq_msgsize_max,
                })).map_err(|e| e.to_string())),
            })
        })
        .collect();
    let pid: Vec<Value> = ns
        .pid
        .iter()
        .map(|(&id, p)| {
            json!({
                "id": id,
                "tasks": members(set, "pid", id),
                "value": ok(p.as_ref().map(|p| json!({"ext_key": p.ext_key})).map_err(|e| e.to_string())),
            })
        })
        .collect();
    json!({ "uts": uts, "ipc": ipc, "pid": pid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{ImageWriter, Magic};

    #[test]
    fn shows_each_namespace() {
        let d = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(d.path().join("utsns-3.img"), Magic::Utsns).unwrap();
        w.write_entry(&pb::UtsnsEntry {
            nodename: "box".into(),
            domainname: "dom".into(),
        })
        .unwrap();
        w.finish().unwrap();
        let mut w = ImageWriter::create(d.path().join("pidns-4.img"), Magic::Pidns).unwrap();
        w.write_entry(&pb::PidnsEntry { ext_key: None }).unwrap();
        w.finish().unwrap();
        let set = ImageSet::read(d.path()).unwrap();
        let bad: Vec<&String> = set.problems.iter().filter(|p| p.contains("ns-")).collect();
        assert!(bad.is_empty(), "{bad:?}");
        let all: Vec<String> = text(&set).into_iter().map(|(_, l)| l).collect();
        let all = all.join("\n");
        assert!(
            all.contains("uts ns 3: hostname \"box\"  domainname \"dom\""),
            "{all}"
        );
        assert!(all.contains("pid ns 4: made by the restore"), "{all}");
        let j = json(&set);
        assert_eq!(j["uts"][0]["value"]["nodename"], "box");
    }
}
