//! The vDSO as an ELF image: its exported functions, and the jumps that
//! make a dumped vDSO's copy call into another kernel's vDSO.
//!
//! A restored program holds pointers into the vDSO it was dumped with
//! (libc caches the symbol addresses it looked up at start-up, and the
//! auxv's AT_SYSINFO_EHDR names the image). When the restoring kernel's
//! vDSO differs (another layout of `[vvar]`/`[vvar_vclock]`/`[vdso]`, or
//! its functions at other offsets), the restore puts a copy of the dumped
//! vDSO back at its address with each exported function's first bytes
//! replaced by a jump to the same function of this kernel's vDSO, which
//! lies elsewhere with its own vvar pages (CRIU's "vDSO proxy"). This
//! module is the pure part: parsing (never panics on any input) and
//! patching. `restore/memory.rs` maps the result.

use std::collections::BTreeMap;

/// One exported function: its name and where it is, as an offset from
/// the start of the image (the image is mapped from its first byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sym {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// One jump to write: at `at` in the dumped copy, to `to` in this
/// kernel's vDSO (both offsets from their image's start). `names` are the
/// dumped symbols at that address (a function and its aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub at: u64,
    pub to: u64,
    pub names: Vec<String>,
}

/// Functions that read no vvar page, so that their old code still works
/// where this kernel's vDSO lacks them: `__vdso_sgx_enter_enclave` only
/// runs ENCLU (a kernel built without SGX has no enclave to enter anyway).
pub const SELF_CONTAINED: &[&str] = &["__vdso_sgx_enter_enclave"];

/// `movabs rax, imm64; jmp rax`: 12 bytes, any target. rax is free at a
/// function's entry (caller-saved, no vDSO function is variadic).
pub const JUMP_LEN: u64 = 12;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_STRSZ: u64 = 10;
const DT_SYMENT: u64 = 11;
const STT_FUNC: u8 = 2;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const SYM_SIZE: u64 = 24;
/// More symbols than any vDSO has: a bound on work for damaged input.
const MAX_SYMS: u64 = 4096;

fn bytes(img: &[u8], off: u64, n: u64) -> Result<&[u8], String> {
    let end = off.checked_add(n).ok_or("offset overflows")?;
    img.get(off as usize..end as usize)
        .filter(|_| end <= usize::MAX as u64)
        .ok_or_else(|| {
            format!(
                "{n} bytes at offset {off:#x} lie beyond its {} bytes",
                img.len()
            )
        })
}

fn u16_at(img: &[u8], off: u64) -> Result<u16, String> {
    Ok(u16::from_le_bytes(bytes(img, off, 2)?.try_into().unwrap()))
}

fn u32_at(img: &[u8], off: u64) -> Result<u32, String> {
    Ok(u32::from_le_bytes(bytes(img, off, 4)?.try_into().unwrap()))
}

fn u64_at(img: &[u8], off: u64) -> Result<u64, String> {
    Ok(u64::from_le_bytes(bytes(img, off, 8)?.try_into().unwrap()))
}

/// The exported (global or weak, defined) functions of the vDSO image
/// `img`, read as the dynamic linker does: the program headers' PT_LOAD
/// (for the link address) and PT_DYNAMIC, its symbol table, string table
/// and DT_HASH (whose chain count is the number of symbols). The error
/// says what is wrong with the image.
pub fn symbols(img: &[u8]) -> Result<Vec<Sym>, String> {
    if bytes(img, 0, 64)?[..4] != *b"\x7fELF" {
        return Err("no ELF magic".into());
    }
    if img[4] != 2 || img[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let phoff = u64_at(img, 0x20)?;
    let phentsize = u16_at(img, 0x36)? as u64;
    let phnum = u16_at(img, 0x38)? as u64;
    if phentsize < 56 {
        return Err(format!("program header entries of {phentsize} bytes"));
    }
    let (mut bias, mut dynamic) = (None, None);
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or("program headers overflow")?;
        let kind = u32_at(img, ph)?;
        let (off, vaddr, filesz) = (
            u64_at(img, ph + 8)?,
            u64_at(img, ph + 16)?,
            u64_at(img, ph + 32)?,
        );
        match kind {
            PT_LOAD if bias.is_none() => {
                bias = Some(vaddr.checked_sub(off).ok_or("PT_LOAD below its offset")?)
            }
            PT_DYNAMIC => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let bias = bias.ok_or("no PT_LOAD")?;
    let (dyn_off, dyn_len) = dynamic.ok_or("no PT_DYNAMIC")?;
    let mut tags: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..dyn_len / 16 {
        let at = dyn_off.checked_add(i * 16).ok_or("PT_DYNAMIC overflows")?;
        let tag = u64_at(img, at)?;
        if tag == DT_NULL {
            break;
        }
        tags.entry(tag).or_insert(u64_at(img, at + 8)?);
    }
    let addr = |tag: u64, what: &str| -> Result<u64, String> {
        let a = *tags.get(&tag).ok_or(format!("no {what} in PT_DYNAMIC"))?;
        a.checked_sub(bias)
            .ok_or(format!("{what} {a:#x} below the image"))
    };
    let (symtab, strtab, hash) = (
        addr(DT_SYMTAB, "DT_SYMTAB")?,
        addr(DT_STRTAB, "DT_STRTAB")?,
        addr(DT_HASH, "DT_HASH")?,
    );
    let strsz = *tags.get(&DT_STRSZ).ok_or("no DT_STRSZ in PT_DYNAMIC")?;
    let syment = tags.get(&DT_SYMENT).copied().unwrap_or(SYM_SIZE);
    if syment < SYM_SIZE {
        return Err(format!("symbols of {syment} bytes"));
    }
    let nsyms = u32_at(img, hash + 4)? as u64;
    if nsyms > MAX_SYMS {
        return Err(format!("{nsyms} symbols"));
    }
    let strings = bytes(img, strtab, strsz)?;
    let mut out = Vec::new();
    for i in 1..nsyms {
        let s = symtab.checked_add(i * syment).ok_or("symbols overflow")?;
        let name_off = u32_at(img, s)? as usize;
        let info = bytes(img, s + 4, 1)?[0];
        let shndx = u16_at(img, s + 6)?;
        let (value, size) = (u64_at(img, s + 8)?, u64_at(img, s + 16)?);
        let bind = info >> 4;
        if info & 0xf != STT_FUNC || shndx == 0 || !(bind == STB_GLOBAL || bind == STB_WEAK) {
            continue;
        }
        let name = strings
            .get(name_off..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .filter(|n| !n.is_empty() && n.len() < strings.len() - name_off)
            .ok_or(format!(
                "symbol {i}: name offset {name_off} outside DT_STRTAB"
            ))?;
        let offset = value
            .checked_sub(bias)
            .filter(|o| o.checked_add(size).is_some_and(|e| e <= img.len() as u64))
            .ok_or(format!(
                "symbol {}: {value:#x} (+{size}) outside the image",
                String::from_utf8_lossy(name)
            ))?;
        out.push(Sym {
            name: String::from_utf8_lossy(name).into_owned(),
            offset,
            size,
        });
    }
    Ok(out)
}

/// Whether two vDSOs export the same functions at the same offsets: then
/// moving this kernel's vDSO to the dumped address keeps every pointer the
/// program holds valid.
pub fn same_symbols(a: &[Sym], b: &[Sym]) -> bool {
    let key = |s: &[Sym]| {
        s.iter()
            .map(|s| (s.name.clone(), s.offset))
            .collect::<BTreeMap<_, _>>()
    };
    key(a) == key(b)
}

/// The jumps from each function the dumped vDSO (`old`) exports to the
/// function of the same name in this kernel's (`new`), one per address.
/// Refused, naming the function, when this kernel's vDSO lacks one or a
/// function is too small to hold the jump.
pub fn jumps(old: &[Sym], new: &[Sym]) -> Result<Vec<Jump>, String> {
    let mut by_at: BTreeMap<u64, Jump> = BTreeMap::new();
    for s in old {
        let found = new.iter().find(|n| n.name == s.name);
        if found.is_none() && SELF_CONTAINED.contains(&s.name.as_str()) {
            // Its old code runs as it is.
            continue;
        }
        let n = found.ok_or_else(|| {
            format!(
                "the dumped vDSO exports {}, this kernel's vDSO does not",
                s.name
            )
        })?;
        if s.size < JUMP_LEN {
            return Err(format!(
                "the dumped vDSO's {} is {} bytes, too small for a {JUMP_LEN}-byte jump",
                s.name, s.size
            ));
        }
        let j = by_at.entry(s.offset).or_insert_with(|| Jump {
            at: s.offset,
            to: n.offset,
            names: Vec::new(),
        });
        if j.to != n.offset {
            return Err(format!(
                "the dumped vDSO's {} and {} are one function, this kernel's are two",
                j.names.join("/"),
                s.name
            ));
        }
        j.names.push(s.name.clone());
    }
    let v: Vec<Jump> = by_at.into_values().collect();
    if let Some(w) = v.windows(2).find(|w| w[0].at + JUMP_LEN > w[1].at) {
        return Err(format!(
            "the dumped vDSO's {} and {} lie too close for a jump each",
            w[0].names.join("/"),
            w[1].names.join("/")
        ));
    }
    Ok(v)
}

/// The bytes of the jump to absolute address `to`.
pub fn jump_code(to: u64) -> [u8; JUMP_LEN as usize] {
    let mut c = [0u8; JUMP_LEN as usize];
    c[..2].copy_from_slice(&[0x48, 0xb8]); // movabs rax, imm64
    c[2..10].copy_from_slice(&to.to_le_bytes());
    c[10..].copy_from_slice(&[0xff, 0xe0]); // jmp rax
    c
}

/// Writes `jumps` into `img` (the dumped vDSO's copy), each to this
/// kernel's vDSO at `new_base`. The jumps come from [`jumps`] on this
/// image's symbols, so each lies inside it.
pub fn patch(img: &mut [u8], jumps: &[Jump], new_base: u64) {
    for j in jumps {
        let at = j.at as usize;
        img[at..at + JUMP_LEN as usize].copy_from_slice(&jump_code(new_base + j.to));
    }
}

/// Whether a thread stopped at `ip` (an offset in the dumped vDSO) can go
/// on once the copy is patched: at a patched entry (it runs the jump), or
/// right after a `syscall` instruction (the fallback path, restarted or
/// returning; what follows a vDSO fallback syscall only returns its
/// result and reads no vvar page). Anywhere else it would run the old
/// code against vvar pages that are no longer there.
pub fn ip_resumable(img: &[u8], jumps: &[Jump], ip: u64) -> bool {
    jumps.iter().any(|j| j.at == ip)
        || ip
            .checked_sub(2)
            .and_then(|a| img.get(a as usize..ip as usize))
            == Some(&[0x0f, 0x05][..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal vDSO-like image: ELF header, PT_LOAD + PT_DYNAMIC,
    /// DT_HASH/SYMTAB/STRTAB, functions `syms` (name, value, size), linked
    /// at `base`.
    pub(crate) fn fake_vdso(base: u64, syms: &[(&str, u64, u64)]) -> Vec<u8> {
        let mut img = vec![0u8; 0x2000];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = 2;
        img[5] = 1;
        img[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        img[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        img[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let ph = |img: &mut Vec<u8>, at: usize, kind: u32, off: u64, len: u64| {
            img[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            img[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            img[at + 16..at + 24].copy_from_slice(&(base + off).to_le_bytes());
            img[at + 32..at + 40].copy_from_slice(&len.to_le_bytes());
        };
        ph(&mut img, 64, PT_LOAD, 0, 0x2000);
        let (dynamic, hash, symtab, strtab) = (0x100u64, 0x200u64, 0x300u64, 0x600u64);
        ph(&mut img, 64 + 56, PT_DYNAMIC, dynamic, 0x60);
        let mut strs = vec![0u8];
        let mut d = dynamic as usize;
        for (tag, val) in [
            (DT_HASH, base + hash),
            (DT_SYMTAB, base + symtab),
            (DT_STRTAB, base + strtab),
            (DT_STRSZ, 0x100),
            (DT_SYMENT, SYM_SIZE),
        ] {
            img[d..d + 8].copy_from_slice(&tag.to_le_bytes());
            img[d + 8..d + 16].copy_from_slice(&val.to_le_bytes());
            d += 16;
        }
        let n = syms.len() as u32 + 1;
        img[hash as usize + 4..hash as usize + 8].copy_from_slice(&n.to_le_bytes());
        for (i, (name, value, size)) in syms.iter().enumerate() {
            let s = symtab as usize + (i + 1) * SYM_SIZE as usize;
            img[s..s + 4].copy_from_slice(&(strs.len() as u32).to_le_bytes());
            strs.extend_from_slice(name.as_bytes());
            strs.push(0);
            img[s + 4] = (STB_GLOBAL << 4) | STT_FUNC;
            img[s + 6..s + 8].copy_from_slice(&12u16.to_le_bytes());
            img[s + 8..s + 16].copy_from_slice(&(base + value).to_le_bytes());
            img[s + 16..s + 24].copy_from_slice(&size.to_le_bytes());
        }
        img[strtab as usize..strtab as usize + strs.len()].copy_from_slice(&strs);
        img
    }

    fn sym(name: &str, offset: u64, size: u64) -> Sym {
        Sym {
            name: name.into(),
            offset,
            size,
        }
    }

    #[test]
    fn reads_the_exported_functions() {
        let img = fake_vdso(
            0xffff_ffff_ff70_0000,
            &[("__vdso_time", 0xae0, 40), ("time", 0xae0, 40)],
        );
        assert_eq!(
            symbols(&img).unwrap(),
            vec![sym("__vdso_time", 0xae0, 40), sym("time", 0xae0, 40)]
        );
    }

    #[test]
    fn reads_this_kernels_vdso() {
        // The engine's own vDSO parses and exports clock_gettime.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
        let (s, e) = line
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (s, e) = (
            u64::from_str_radix(s, 16).unwrap(),
            u64::from_str_radix(e, 16).unwrap(),
        );
        let mut img = vec![0u8; (e - s) as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open("/proc/self/mem").unwrap(),
            &mut img,
            s,
        )
        .unwrap();
        let syms = symbols(&img).unwrap();
        assert!(syms.iter().any(|s| s.name == "__vdso_clock_gettime"));
        assert!(syms.iter().all(|s| s.size >= JUMP_LEN), "{syms:?}");
    }

    #[test]
    fn refuses_what_is_not_a_vdso() {
        assert!(symbols(b"").is_err());
        assert!(symbols(&[0u8; 4096]).unwrap_err().contains("magic"));
        let mut img = fake_vdso(0, &[("f", 0x800, 40)]);
        // The symbol's name beyond the string table.
        img[0x300 + 24..0x300 + 28].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(symbols(&img).unwrap_err().contains("outside DT_STRTAB"));
    }

    #[test]
    fn jumps_name_what_is_missing_or_too_small() {
        let old = [sym("time", 0xae0, 40), sym("__vdso_getcpu", 0xb00, 30)];
        let new = [sym("time", 0x900, 40)];
        let err = jumps(&old, &new).unwrap_err();
        assert!(err.contains("__vdso_getcpu"), "{err}");
        assert!(err.contains("this kernel's vDSO does not"), "{err}");
        // A function that reads no vvar page keeps its old code.
        let sgx = [sym("__vdso_sgx_enter_enclave", 0xc00, 200)];
        assert_eq!(jumps(&sgx, &new).unwrap(), vec![]);
        let small = [sym("time", 0xae0, 8)];
        assert!(jumps(&small, &new).unwrap_err().contains("too small"));
    }

    #[test]
    fn one_jump_per_function_and_its_aliases() {
        let old = [
            sym("time", 0xae0, 40),
            sym("__vdso_time", 0xae0, 40),
            sym("getcpu", 0xf20, 44),
        ];
        let new = [
            sym("__vdso_time", 0x700, 40),
            sym("time", 0x700, 40),
            sym("getcpu", 0x10, 44),
        ];
        let j = jumps(&old, &new).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!((j[0].at, j[0].to), (0xae0, 0x700));
        assert_eq!(j[0].names, ["time", "__vdso_time"]);
        let mut img = vec![0u8; 0x1000];
        patch(&mut img, &j, 0x7f00_0000_0000);
        assert_eq!(&img[0xae0..0xaec], &jump_code(0x7f00_0000_0700));
        assert_eq!(&img[0xae0..0xae2], &[0x48, 0xb8]);
        assert_eq!(&img[0xf2a..0xf2c], &[0xff, 0xe0]);
        assert!(ip_resumable(&img, &j, 0xae0));
        assert!(!ip_resumable(&img, &j, 0xae4));
        img[0x500..0x502].copy_from_slice(&[0x0f, 0x05]);
        assert!(ip_resumable(&img, &j, 0x502));
        assert!(!ip_resumable(&img, &j, 0));
    }

    #[test]
    fn same_symbols_ignores_order() {
        let a = [sym("a", 1, 20), sym("b", 2, 20)];
        let b = [sym("b", 2, 20), sym("a", 1, 20)];
        assert!(same_symbols(&a, &b));
        assert!(!same_symbols(&a, &[sym("a", 1, 20), sym("b", 3, 20)]));
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(img in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = symbols(&img);
        }

        #[test]
        fn never_panics_on_damaged_vdso(
            at in proptest::collection::vec((0usize..0x700, any::<u8>()), 1..16)
        ) {
            let mut img = fake_vdso(0, &[("time", 0xae0, 40), ("getcpu", 0xf20, 44)]);
            for (i, b) in at {
                img[i] = b;
            }
            if let Ok(syms) = symbols(&img) {
                for s in &syms {
                    prop_assert!(s.offset + s.size <= img.len() as u64);
                }
                if let Ok(j) = jumps(&syms, &syms) {
                    patch(&mut img, &j, 0x7f00_0000_0000);
                }
            }
        }
    }
}
