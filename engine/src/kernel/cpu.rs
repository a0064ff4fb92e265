//! The CPU images were dumped on, and whether this one can run them.
//!
//! A restored program keeps the choices it made on the CPU it started
//! on. glibc's dynamic linker picks its `memcpy`, `strlen` and lazy
//! binding trampoline (AVX2, AVX-512, XSAVEC, ...) once, from CPUID, and
//! programs do the same; on a CPU without the instruction the program
//! dies of SIGILL at its next call, long after a restore that "worked".
//! A thread's xsave area with state components this CPU lacks cannot be
//! loaded at all. So the dump records the CPU in CRIU's `cpuinfo.img`,
//! and the restore, before it creates any process, refuses images of a
//! CPU with xsave components (`fpu`) or instruction sets (`ins`) this one
//! lacks, naming them (not MPX or PKRU, which a thread's restore drops
//! without loss: `ptrace::regs::XFEATURES_DROPPABLE`). `--cpu-cap` (CRIU's option) picks the checks;
//! `none` restores anyway.
//!
//! `capability` holds CRIU's first layout (`capability_ver` 1): twelve
//! words of CPUID output in CRIU's `cpuid_leafs` order, the words
//! Linux defines itself left 0.

use crate::images::pb;
use crate::images::pb::cpuinfo_x86_entry::Vendor;

/// CRIU's `capability_ver` of the layout below.
pub const CAPABILITY_VER: u32 = 1;

#[derive(Clone, Copy)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// The CPUID output each word of the layout holds; None for the words
/// Linux makes up or that are of other vendors (Transmeta, Centaur).
const WORDS: [Option<(u32, u32, Reg)>; 12] = [
    Some((1, 0, Reg::Edx)),
    Some((0x8000_0001, 0, Reg::Edx)),
    None,
    None,
    Some((1, 0, Reg::Ecx)),
    None,
    Some((0x8000_0001, 0, Reg::Ecx)),
    None,
    None,
    Some((7, 0, Reg::Ebx)),
    Some((0xd, 1, Reg::Eax)),
    Some((7, 0, Reg::Ecx)),
];

/// Instruction sets a program may choose code by: (word, bit, name as
/// /proc/cpuinfo spells it).
const INSTRUCTIONS: &[(usize, u32, &str)] = &[
    (0, 8, "cx8"),
    (0, 15, "cmov"),
    (0, 23, "mmx"),
    (0, 24, "fxsr"),
    (0, 25, "sse"),
    (0, 26, "sse2"),
    (1, 27, "rdtscp"),
    (4, 0, "pni"),
    (4, 1, "pclmulqdq"),
    (4, 9, "ssse3"),
    (4, 12, "fma"),
    (4, 13, "cx16"),
    (4, 19, "sse4_1"),
    (4, 20, "sse4_2"),
    (4, 22, "movbe"),
    (4, 23, "popcnt"),
    (4, 25, "aes"),
    (4, 26, "xsave"),
    (4, 28, "avx"),
    (4, 29, "f16c"),
    (4, 30, "rdrand"),
    (6, 0, "lahf_lm"),
    (6, 5, "abm"),
    (6, 6, "sse4a"),
    (6, 8, "3dnowprefetch"),
    (6, 11, "xop"),
    (6, 16, "fma4"),
    (6, 21, "tbm"),
    (9, 3, "bmi1"),
    (9, 4, "hle"),
    (9, 5, "avx2"),
    (9, 8, "bmi2"),
    (9, 9, "erms"),
    (9, 11, "rtm"),
    (9, 16, "avx512f"),
    (9, 17, "avx512dq"),
    (9, 18, "rdseed"),
    (9, 19, "adx"),
    (9, 21, "avx512ifma"),
    (9, 23, "clflushopt"),
    (9, 24, "clwb"),
    (9, 26, "avx512pf"),
    (9, 27, "avx512er"),
    (9, 28, "avx512cd"),
    (9, 29, "sha_ni"),
    (9, 30, "avx512bw"),
    (9, 31, "avx512vl"),
    (10, 0, "xsaveopt"),
    (10, 1, "xsavec"),
    (11, 1, "avx512vbmi"),
    (11, 6, "avx512_vbmi2"),
    (11, 8, "gfni"),
    (11, 9, "vaes"),
    (11, 10, "vpclmulqdq"),
    (11, 11, "avx512_vnni"),
    (11, 12, "avx512_bitalg"),
    (11, 14, "avx512_vpopcntdq"),
    (11, 22, "rdpid"),
];

/// Names of the xsave state components (bit numbers of XCR0).
const XFEATURES: &[(u32, &str)] = &[
    (0, "x87"),
    (1, "sse"),
    (2, "avx"),
    (3, "mpx bounds"),
    (4, "mpx csr"),
    (5, "avx-512 opmask"),
    (6, "avx-512 zmm_hi256"),
    (7, "avx-512 hi16_zmm"),
    (9, "pkru"),
    (17, "amx tilecfg"),
    (18, "amx tiledata"),
    (19, "apx"),
];

/// Which checks a restore makes (`--cpu-cap`, CRIU's spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuCap {
    /// xsave state components.
    pub fpu: bool,
    /// Instruction sets a program may have chosen code by.
    pub ins: bool,
    /// Every bit of every word, and the vendor: the same kind of CPU.
    pub cpu: bool,
}

impl Default for CpuCap {
    fn default() -> CpuCap {
        CpuCap {
            fpu: true,
            ins: true,
            cpu: false,
        }
    }
}

impl std::str::FromStr for CpuCap {
    type Err = String;
    fn from_str(s: &str) -> Result<CpuCap, String> {
        let mut cap = CpuCap {
            fpu: false,
            ins: false,
            cpu: false,
        };
        for w in s.split(',') {
            match w.trim() {
                "fpu" => cap.fpu = true,
                "ins" => cap.ins = true,
                "cpu" => cap.cpu = true,
                "all" => {
                    cap = CpuCap {
                        fpu: true,
                        ins: true,
                        cpu: true,
                    }
                }
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown --cpu-cap {other:?} (fpu, ins, cpu, all or none, comma-separated)"
                    ))
                }
            }
        }
        Ok(cap)
    }
}

/// This CPU, as the images record it.
pub fn this() -> pb::CpuinfoX86Entry {
    use crate::sys::cpu::cpuid;
    let max = cpuid(0, 0);
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let query = |leaf: u32, sub: u32| {
        let top = if leaf >= 0x8000_0000 {
            max_ext
        } else {
            max.eax
        };
        (leaf <= top).then(|| cpuid(leaf, sub))
    };
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&max.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&max.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&max.ecx.to_le_bytes());
    let capability = WORDS
        .iter()
        .map(|w| {
            w.and_then(|(leaf, sub, reg)| {
                query(leaf, sub).map(|r| match reg {
                    Reg::Eax => r.eax,
                    Reg::Ebx => r.ebx,
                    Reg::Ecx => r.ecx,
                    Reg::Edx => r.edx,
                })
            })
            .unwrap_or(0)
        })
        .collect();
    let brand: Vec<u8> = (0x8000_0002..=0x8000_0004)
        .filter_map(|l| query(l, 0))
        .flat_map(|r| [r.eax, r.ebx, r.ecx, r.edx])
        .flat_map(u32::to_le_bytes)
        .collect();
    let (family, model, stepping) = signature(query(1, 0).map_or(0, |r| r.eax));
    let xsave = query(0xd, 0);
    pb::CpuinfoX86Entry {
        vendor_id: vendor_of(&vendor) as i32,
        cpu_family: family,
        model,
        stepping,
        capability_ver: CAPABILITY_VER,
        capability,
        model_id: Some(brand_string(&brand)),
        xfeatures_mask: Some(crate::sys::cpu::xcr0()),
        xsave_size: xsave.map(|r| r.ebx),
        xsave_size_max: xsave.map(|r| r.ecx),
    }
}

fn vendor_of(id: &[u8; 12]) -> Vendor {
    match id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        _ => Vendor::Unknown,
    }
}

/// Family, model and stepping from CPUID.1:EAX, with the extended
/// family and model where the SDM says they apply.
fn signature(eax: u32) -> (u32, u32, u32) {
    let stepping = eax & 0xf;
    let base_model = (eax >> 4) & 0xf;
    let base_family = (eax >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        base_model | (((eax >> 16) & 0xf) << 4)
    } else {
        base_model
    };
    (family, model, stepping)
}

/// The brand string: NUL-padded, often with leading blanks.
fn brand_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

/// What the image's CPU had that this one lacks, under `cap`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// xsave state components (XCR0 bits).
    pub xfeatures: u64,
    /// Instruction sets, by name; with `cpu`, other bits as `word N bit B`.
    pub features: Vec<String>,
    /// With `cpu`: the vendors differ (image's, this one's).
    pub vendor: Option<(String, String)>,
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.xfeatures == 0 && self.features.is_empty() && self.vendor.is_none()
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.xfeatures != 0 {
            let names: Vec<String> = (0..64)
                .filter(|b| self.xfeatures & (1 << b) != 0)
                .map(|b| {
                    XFEATURES
                        .iter()
                        .find(|(bit, _)| *bit == b)
                        .map_or(format!("#{b}"), |(_, n)| n.to_string())
                })
                .collect();
            parts.push(format!(
                "xsave state components {} ({:#x})",
                names.join(", "),
                self.xfeatures
            ));
        }
        if !self.features.is_empty() {
            parts.push(format!("instruction sets {}", self.features.join(", ")));
        }
        if let Some((img, here)) = &self.vendor {
            parts.push(format!("vendor {img} (this CPU: {here})"));
        }
        f.write_str(&parts.join("; "))
    }
}

fn vendor_name(v: i32) -> String {
    Vendor::try_from(v).map_or(format!("vendor {v}"), |v| v.as_str_name().to_lowercase())
}

/// What `img` (the images' CPU) has that `here` lacks, for the checks in
/// `cap`. A word of the layout either side lacks counts as 0 there.
pub fn missing(img: &pb::CpuinfoX86Entry, here: &pb::CpuinfoX86Entry, cap: CpuCap) -> Missing {
    let mut m = Missing::default();
    if cap.fpu {
        m.xfeatures = img.xfeatures_mask.unwrap_or(0)
            & !here.xfeatures_mask.unwrap_or(0)
            & !crate::ptrace::regs::XFEATURES_DROPPABLE;
    }
    let word = |e: &pb::CpuinfoX86Entry, i: usize| {
        if e.capability_ver == CAPABILITY_VER {
            e.capability.get(i).copied().unwrap_or(0)
        } else {
            0
        }
    };
    if cap.ins || cap.cpu {
        for &(w, bit, name) in INSTRUCTIONS {
            if word(img, w) & !word(here, w) & (1 << bit) != 0 {
                m.features.push(name.to_string());
            }
        }
    }
    if cap.cpu {
        for w in 0..WORDS.len() {
            let lost = word(img, w) & !word(here, w);
            for bit in (0..32).filter(|b| lost & (1 << b) != 0) {
                if !INSTRUCTIONS.iter().any(|&(iw, ib, _)| iw == w && ib == bit) {
                    m.features.push(format!("word {w} bit {bit}"));
                }
            }
        }
        if img.vendor_id != here.vendor_id {
            m.vendor = Some((vendor_name(img.vendor_id), vendor_name(here.vendor_id)));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cpu(xcr0: u64, words: &[(usize, u32)]) -> pb::CpuinfoX86Entry {
        let mut capability = vec![0u32; 12];
        for &(w, v) in words {
            capability[w] = v;
        }
        pb::CpuinfoX86Entry {
            vendor_id: Vendor::Intel as i32,
            capability_ver: CAPABILITY_VER,
            capability,
            xfeatures_mask: Some(xcr0),
            ..Default::default()
        }
    }

    #[test]
    fn avx512_on_a_cpu_without_it() {
        let img = cpu(0xe7, &[(9, 1 << 16 | 1 << 5)]);
        let here = cpu(0x7, &[(9, 1 << 5)]);
        let m = missing(&img, &here, CpuCap::default());
        assert_eq!(m.xfeatures, 0xe0);
        assert_eq!(m.features, ["avx512f"]);
        assert_eq!(
            m.to_string(),
            "xsave state components avx-512 opmask, avx-512 zmm_hi256, avx-512 hi16_zmm (0xe0); instruction sets avx512f"
        );
        let fpu_only = "fpu".parse().unwrap();
        assert_eq!(
            missing(&img, &here, fpu_only).features,
            Vec::<String>::new()
        );
        assert!(missing(&img, &here, "none".parse().unwrap()).is_empty());
        // The other way round nothing is missing.
        assert!(missing(&here, &img, CpuCap::default()).is_empty());
    }

    #[test]
    fn mpx_and_pkru_are_not_missed() {
        // A TCG guest's XCR0 (x87, SSE, AVX, MPX, PKRU) on a host without
        // MPX and PKRU.
        assert!(missing(&cpu(0x21f, &[]), &cpu(0x7, &[]), CpuCap::default()).is_empty());
    }

    #[test]
    fn cpu_check_names_other_bits_and_the_vendor() {
        let img = cpu(0x3, &[(4, 1 << 31)]);
        let mut here = cpu(0x3, &[]);
        here.vendor_id = Vendor::Amd as i32;
        assert!(missing(&img, &here, CpuCap::default()).is_empty());
        let m = missing(&img, &here, "cpu".parse().unwrap());
        assert_eq!(m.features, ["word 4 bit 31"]);
        assert_eq!(m.vendor, Some(("intel".into(), "amd".into())));
    }

    #[test]
    fn another_layout_is_not_compared_bit_by_bit() {
        let mut img = cpu(0x3, &[(9, 1 << 5)]);
        img.capability_ver = 2;
        assert!(missing(&img, &cpu(0x3, &[]), CpuCap::default()).is_empty());
    }

    #[test]
    fn parsing_cpu_cap() {
        assert_eq!("fpu,ins".parse::<CpuCap>().unwrap(), CpuCap::default());
        assert!("bogus".parse::<CpuCap>().unwrap_err().contains("bogus"));
        assert!("all".parse::<CpuCap>().unwrap().cpu);
    }

    #[test]
    fn signatures() {
        // An Intel family 6 model 0x8f (Sapphire Rapids) stepping 8.
        assert_eq!(signature(0x000806f8), (6, 0x8f, 8));
        // An AMD family 0x19 model 0x11.
        assert_eq!(signature(0x00a10f11), (0x19, 0x11, 1));
        assert_eq!(brand_string(b"  Intel Xeon\0\0\0"), "Intel Xeon");
    }

    #[test]
    fn this_cpu_runs_its_own_images() {
        let me = this();
        assert_eq!(me.capability.len(), 12);
        assert!(me.xfeatures_mask.unwrap() & 0x3 == 0x3, "x87 and sse");
        assert!(missing(&me, &me, "all".parse().unwrap()).is_empty());
    }

    proptest! {
        #[test]
        fn missing_is_what_the_image_has_and_this_lacks(
            a in proptest::collection::vec(any::<u32>(), 12),
            b in proptest::collection::vec(any::<u32>(), 12),
            xa in any::<u64>(), xb in any::<u64>(),
        ) {
            let img = pb::CpuinfoX86Entry { capability_ver: 1, capability: a.clone(), xfeatures_mask: Some(xa), ..Default::default() };
            let here = pb::CpuinfoX86Entry { capability_ver: 1, capability: b.clone(), xfeatures_mask: Some(xb), ..Default::default() };
            let m = missing(&img, &here, "all".parse().unwrap());
            prop_assert_eq!(m.xfeatures, xa & !xb & !crate::ptrace::regs::XFEATURES_DROPPABLE);
            let lost_bits: usize = a.iter().zip(&b).map(|(x, y)| (x & !y).count_ones() as usize).sum();
            prop_assert_eq!(m.features.len(), lost_bits);
            prop_assert!(missing(&img, &img, "all".parse().unwrap()).is_empty());
        }
    }
}
