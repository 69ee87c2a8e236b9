//! The cold tier of a shard's dedupe window: ids older than the hot tier, in sorted run files on
//! disk under `<data_dir>/dedupe/shard-<k>/`, each with a Bloom filter and a page index kept in
//! memory (about 1.9 bytes per id), so a new id costs no disk read unless a filter says "maybe".
//!
//! A run holds the ids of one spill (the hot tier's days older than `dedupe_hot_hours`, plus any
//! late ids of such days gathered since the last spill), or of a merge of seven spills (level 1,
//! written through a [`RunWriter`] from [`RunCursor`]s); it is removed whole once its newest day
//! is older than the window. Entries are 14 bytes: the fingerprint's low 64 bits, then 24 more
//! fingerprint bits and the 24 content bits (the value of `pipeline::dedupe` below its day), so a
//! cold hit answers DUPLICATE or CONFLICT exactly as the hot tier does.
//!
//! Run file `run-<id>.cold`: a 32-byte header (`RDC1`, shard count u32, shard u32, oldest and
//! newest day u16, entry count u64, xxh3 of the first 24 bytes u64), then pages of up to
//! [`PAGE_ENTRIES`] entries sorted by (key, value), each followed by the xxh3 of its bytes seeded
//! with the page number. A run is read whole and checked when the shard starts (that builds its
//! filter and index); a lookup checks the page it reads again.
//!
//! `manifest` lists the runs that count (`RDM1`, shard count u32, next run id u64, run count u32,
//! then per run id u64, oldest and newest day u16, entry count u64, level u8; xxh3 of all of it
//! last). A run
//! is written and fsynced first, then named by a new manifest (temporary file, fsync, rename, fsync
//! of the directory); files the manifest does not name are leftovers of a crash and are deleted
//! at start. A run or manifest that fails its check, or a run the manifest names that is missing,
//! makes the whole shard's cold tier unusable: the caller rebuilds it from the blocks.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const RUN_MAGIC: &[u8; 4] = b"RDC1";
const MANIFEST_MAGIC: &[u8; 4] = b"RDM1";
const HEADER: usize = 32;
/// Bytes per stored id.
pub const ENTRY: usize = 14;
/// Entries per page: one page (3.5 KiB) is read per "maybe", and the index keeps one key per page
/// (0.03 bytes per id).
pub const PAGE_ENTRIES: usize = 256;
const PAGE_BYTES: usize = PAGE_ENTRIES * ENTRY;
const CHECK: usize = 8;
/// Filter bits per id: about 0.1% false "maybe" per run, and with the index under 2 bytes per id.
pub const FILTER_BITS_PER_ID: usize = 15;
const LOW48: u64 = (1 << 48) - 1;

/// Why a cold tier cannot be used (the path and what is wrong with it).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct ColdDamage {
    pub path: String,
    pub why: String,
}

fn damage(path: &Path, why: impl Into<String>) -> ColdDamage {
    ColdDamage {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// A split-block Bloom filter: each id sets one bit in each of the eight words of one 64-byte
/// block, so a probe reads one cache line.
pub struct Filter {
    blocks: Vec<[u64; 8]>,
}

fn mix(key: u64) -> u64 {
    let mut h = key ^ (key >> 31);
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

impl Filter {
    pub fn with_capacity(ids: usize) -> Filter {
        let blocks = (ids * FILTER_BITS_PER_ID).div_ceil(512).max(1);
        Filter {
            blocks: vec![[0; 8]; blocks],
        }
    }

    fn block(&self, key: u64) -> usize {
        // Keys are keyed random hashes: their high half picks the block.
        (((key >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    pub fn insert(&mut self, key: u64) {
        let b = self.block(key);
        let h = mix(key);
        for (i, word) in self.blocks[b].iter_mut().enumerate() {
            *word |= 1 << ((h >> (i * 8)) & 63);
        }
    }

    pub fn may_contain(&self, key: u64) -> bool {
        let block = &self.blocks[self.block(key)];
        let h = mix(key);
        block
            .iter()
            .enumerate()
            .all(|(i, word)| word & (1 << ((h >> (i * 8)) & 63)) != 0)
    }

    pub fn heap_bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

/// What the manifest records of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    pub id: u64,
    pub oldest_day: u16,
    pub newest_day: u16,
    pub count: u64,
    /// 0 for a spill, 1 for a merge of spills (merged runs are not merged again).
    pub level: u8,
}

/// One run, open for lookups.
pub struct ColdRun {
    pub info: RunInfo,
    path: PathBuf,
    file: File,
    filter: Filter,
    /// The first key of each page.
    index: Vec<u64>,
}

impl ColdRun {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the run may hold `fingerprint` (then [`ColdRun::lookup`] reads a page).
    pub fn may_hold(&self, fingerprint: u128) -> bool {
        self.filter.may_contain(fingerprint as u64)
    }

    /// The stored value (24 fingerprint bits and 24 content bits) of `fingerprint`, if the run
    /// holds it: a page read when the filter says "maybe". `Err` when that page fails its check.
    pub fn lookup(&self, fingerprint: u128) -> Result<Option<u64>, ColdDamage> {
        let key = fingerprint as u64;
        if !self.filter.may_contain(key) {
            return Ok(None);
        }
        let extra = ((fingerprint >> 64) as u64) & 0xFF_FFFF;
        // The pages whose range may hold `key`: from the last one starting below it, on while
        // pages start with it (ids sharing their low 64 bits may cross a page boundary).
        let mut page = self.index.partition_point(|&k| k < key).saturating_sub(1);
        let mut buf = vec![0u8; PAGE_BYTES + CHECK];
        while page < self.index.len() && self.index[page] <= key {
            let entries = self.page_entries(page);
            let len = entries * ENTRY;
            let offset = (HEADER + page * (PAGE_BYTES + CHECK)) as u64;
            self.file
                .read_exact_at(&mut buf[..len + CHECK], offset)
                .map_err(|e| damage(&self.path, format!("page {page}: {e}")))?;
            check_page(&buf[..len + CHECK], page).map_err(|why| damage(&self.path, why))?;
            for e in buf[..len].chunks_exact(ENTRY) {
                let (k, v) = decode_entry(e);
                if k == key && v >> 24 == extra {
                    return Ok(Some(v));
                }
                if k > key {
                    return Ok(None);
                }
            }
            page += 1;
        }
        Ok(None)
    }

    fn page_entries(&self, page: usize) -> usize {
        let before = page * PAGE_ENTRIES;
        (self.info.count as usize - before).min(PAGE_ENTRIES)
    }

    /// Memory the run takes (filter and index).
    pub fn heap_bytes(&self) -> usize {
        self.filter.heap_bytes() + self.index.capacity() * 8
    }
}

fn decode_entry(e: &[u8]) -> (u64, u64) {
    let mut k = [0u8; 8];
    k.copy_from_slice(&e[..8]);
    let mut v = [0u8; 8];
    v[..6].copy_from_slice(&e[8..14]);
    (u64::from_le_bytes(k), u64::from_le_bytes(v))
}

fn check_page(bytes: &[u8], page: usize) -> Result<(), String> {
    let (body, check) = bytes.split_at(bytes.len() - CHECK);
    let want = u64::from_le_bytes(check.try_into().map_err(|_| "short page".to_string())?);
    if xxhash_rust::xxh3::xxh3_64_with_seed(body, page as u64) != want {
        return Err(format!("page {page} failed its checksum"));
    }
    Ok(())
}

/// A run being written (see [`ColdDir::run_writer`]): entries in order, pages checksummed as
/// they fill; [`RunWriter::finish`] writes the header, fsyncs and renames it into place.
pub struct RunWriter {
    dir: ColdDir,
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<File>,
    info: RunInfo,
    filter: Filter,
    index: Vec<u64>,
    page: Vec<u8>,
    last: Option<(u64, u64)>,
}

impl RunWriter {
    /// Adds an entry (key, value below the day); entries come sorted, and a repeat of the last
    /// one (an id spilled twice, around a restart) is written once.
    pub fn push(&mut self, key: u64, value: u64) -> std::io::Result<()> {
        let entry = (key, value & LOW48);
        match self.last {
            Some(last) if last == entry => return Ok(()),
            Some(last) if last > entry => return Err(std::io::Error::other("cold run entries out of order")),
            _ => {}
        }
        self.last = Some(entry);
        if self.page.is_empty() {
            self.index.push(key);
        }
        self.filter.insert(key);
        self.page.extend_from_slice(&key.to_le_bytes());
        self.page.extend_from_slice(&entry.1.to_le_bytes()[..6]);
        self.info.count += 1;
        if self.page.len() == PAGE_BYTES {
            self.seal_page()?;
        }
        Ok(())
    }

    fn seal_page(&mut self) -> std::io::Result<()> {
        let n = self.index.len() - 1;
        let check = xxhash_rust::xxh3::xxh3_64_with_seed(&self.page, n as u64);
        self.page.extend_from_slice(&check.to_le_bytes());
        self.file.write_all(&self.page)?;
        self.page.clear();
        Ok(())
    }

    /// Completes the run durably (header, fsync, rename, fsync of the directory) and opens it.
    pub fn finish(mut self) -> std::io::Result<ColdRun> {
        if !self.page.is_empty() {
            self.seal_page()?;
        }
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.write_all_at(&self.dir.header(&self.info), 0)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        File::open(&self.dir.dir)?.sync_all()?;
        Ok(ColdRun {
            info: self.info,
            file: File::open(&self.path)?,
            path: self.path,
            filter: self.filter,
            index: self.index,
        })
    }
}

/// A run read in order, one checked page at a time (see [`ColdDir::cursor`]).
pub struct RunCursor {
    info: RunInfo,
    path: PathBuf,
    file: File,
    page: usize,
    buf: Vec<u8>,
    /// Position of the next entry in `buf`.
    at: usize,
}

impl RunCursor {
    pub fn next_entry(&mut self) -> Result<Option<(u64, u64)>, ColdDamage> {
        if self.at + CHECK >= self.buf.len() {
            let before = self.page * PAGE_ENTRIES;
            if before as u64 >= self.info.count {
                return Ok(None);
            }
            let entries = (self.info.count as usize - before).min(PAGE_ENTRIES);
            self.buf.resize(entries * ENTRY + CHECK, 0);
            let offset = (HEADER + self.page * (PAGE_BYTES + CHECK)) as u64;
            self.file
                .read_exact_at(&mut self.buf, offset)
                .map_err(|e| damage(&self.path, format!("page {}: {e}", self.page)))?;
            check_page(&self.buf, self.page).map_err(|why| damage(&self.path, why))?;
            self.page += 1;
            self.at = 0;
        }
        let entry = decode_entry(&self.buf[self.at..self.at + ENTRY]);
        self.at += ENTRY;
        Ok(Some(entry))
    }
}

/// The cold tier's files of one shard.
#[derive(Debug, Clone)]
pub struct ColdDir {
    dir: PathBuf,
    shard: u32,
    shards: u32,
}

/// The manifest's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub next_id: u64,
    pub runs: Vec<RunInfo>,
}

impl ColdDir {
    pub fn new(data_dir: &Path, shard: usize, shards: usize) -> ColdDir {
        ColdDir {
            dir: data_dir.join("dedupe").join(format!("shard-{shard}")),
            shard: shard as u32,
            shards: shards as u32,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn run_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("run-{id:016}.cold"))
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest")
    }

    /// Opens every run the manifest names, each read whole and checked; deletes what it does not
    /// name. `Err` when anything named cannot be trusted (the caller rebuilds from the blocks).
    pub fn open(&self) -> Result<(Manifest, Vec<ColdRun>), ColdDamage> {
        let manifest = match self.read_manifest()? {
            Some(m) => m,
            None => {
                let leftovers = self.files().map_err(|e| damage(&self.dir, e.to_string()))?;
                if leftovers.iter().any(|p| p.extension().is_some_and(|e| e == "cold")) {
                    return Err(damage(&self.manifest_path(), "run files without a manifest"));
                }
                for p in leftovers {
                    let _ = std::fs::remove_file(p);
                }
                return Ok((Manifest::default(), Vec::new()));
            }
        };
        let mut runs = Vec::with_capacity(manifest.runs.len());
        for info in &manifest.runs {
            runs.push(self.open_run(*info)?);
        }
        let named: Vec<PathBuf> = manifest.runs.iter().map(|r| self.run_path(r.id)).collect();
        for p in self.files().map_err(|e| damage(&self.dir, e.to_string()))? {
            if p != self.manifest_path() && !named.contains(&p) {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok((manifest, runs))
    }

    /// Deletes the cold tiers of shards `shards` and above (left by a start with more shards).
    pub fn remove_other_shards(data_dir: &Path, shards: usize) -> std::io::Result<()> {
        let root = data_dir.join("dedupe");
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            let shard = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("shard-"))
                .and_then(|n| n.parse::<usize>().ok());
            if shard.is_some_and(|k| k >= shards) {
                std::fs::remove_dir_all(&path)?;
            }
        }
        Ok(())
    }

    /// Deletes the shard's cold tier (before a rebuild from the blocks).
    pub fn wipe(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn read_manifest(&self) -> Result<Option<Manifest>, ColdDamage> {
        let path = self.manifest_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(damage(&path, e.to_string())),
        };
        let bad = |why: &str| damage(&path, why.to_string());
        if bytes.len() < 4 + 4 + 8 + 4 + CHECK || &bytes[..4] != MANIFEST_MAGIC {
            return Err(bad("not a cold-tier manifest"));
        }
        let (body, check) = bytes.split_at(bytes.len() - CHECK);
        if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(check.try_into().map_err(|_| bad("short"))?) {
            return Err(bad("failed its checksum"));
        }
        let mut r = crate::store::codec::Reader::new(&body[4..]);
        let read = |r: &mut crate::store::codec::Reader<'_>| -> Result<Manifest, crate::store::codec::CodecError> {
            let shards = r.u32()?;
            if shards != self.shards {
                return Err(crate::store::codec::CodecError::Invalid(
                    "written with another shard count",
                ));
            }
            let next_id = r.u64()?;
            let n = r.u32()?;
            let mut runs = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                runs.push(RunInfo {
                    id: r.u64()?,
                    oldest_day: r.u16()?,
                    newest_day: r.u16()?,
                    count: r.u64()?,
                    level: r.u8()?,
                });
            }
            Ok(Manifest { next_id, runs })
        };
        read(&mut r).map(Some).map_err(|e| damage(&path, e.to_string()))
    }

    /// Makes `manifest` the one that counts (temporary file, fsync, rename, fsync of the dir).
    pub fn write_manifest(&self, manifest: &Manifest) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut out = Vec::with_capacity(32 + manifest.runs.len() * 21);
        out.extend_from_slice(MANIFEST_MAGIC);
        let mut w = crate::store::codec::Writer(&mut out);
        w.u32(self.shards);
        w.u64(manifest.next_id);
        w.u32(manifest.runs.len() as u32);
        for r in &manifest.runs {
            w.u64(r.id);
            w.u16(r.oldest_day);
            w.u16(r.newest_day);
            w.u64(r.count);
            w.u8(r.level);
        }
        let check = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&check.to_le_bytes());
        let path = self.manifest_path();
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Writes a run of `entries` ((key, value below the day), sorted; repeats are written once)
    /// durably, and opens it. Not counted until a manifest names it.
    pub fn write_run(
        &self,
        id: u64,
        oldest_day: u16,
        newest_day: u16,
        entries: &[(u64, u64)],
    ) -> std::io::Result<ColdRun> {
        let mut w = self.run_writer(id, oldest_day, newest_day, 0, entries.len())?;
        for &(k, v) in entries {
            w.push(k, v)?;
        }
        w.finish()
    }

    /// A run being written entry by entry (sorted), for at most about `capacity` entries (the
    /// size of its filter).
    pub fn run_writer(
        &self,
        id: u64,
        oldest_day: u16,
        newest_day: u16,
        level: u8,
        capacity: usize,
    ) -> std::io::Result<RunWriter> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.run_path(id);
        let tmp = path.with_extension("tmp");
        let mut file = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        // The header is written last, once the count is known.
        file.write_all(&[0u8; HEADER])?;
        Ok(RunWriter {
            dir: self.clone(),
            path,
            tmp,
            file,
            info: RunInfo {
                id,
                oldest_day,
                newest_day,
                count: 0,
                level,
            },
            filter: Filter::with_capacity(capacity),
            index: Vec::with_capacity(capacity.div_ceil(PAGE_ENTRIES)),
            page: Vec::with_capacity(PAGE_BYTES + CHECK),
            last: None,
        })
    }

    fn header(&self, info: &RunInfo) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(RUN_MAGIC);
        header.extend_from_slice(&self.shards.to_le_bytes());
        header.extend_from_slice(&self.shard.to_le_bytes());
        header.extend_from_slice(&info.oldest_day.to_le_bytes());
        header.extend_from_slice(&info.newest_day.to_le_bytes());
        header.extend_from_slice(&info.count.to_le_bytes());
        let check = xxhash_rust::xxh3::xxh3_64(&header);
        header.extend_from_slice(&check.to_le_bytes());
        header
    }

    /// Reads a run's entries in order, page by page, each page checked.
    pub fn cursor(&self, info: RunInfo) -> Result<RunCursor, ColdDamage> {
        let path = self.run_path(info.id);
        let file = File::open(&path).map_err(|e| damage(&path, e.to_string()))?;
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| damage(&path, format!("header: {e}")))?;
        if &header[..4] != RUN_MAGIC {
            return Err(damage(&path, "not a cold-tier run"));
        }
        if header[..] != self.header(&info)[..] {
            return Err(damage(&path, format!("header does not match the manifest's {info:?}")));
        }
        let pages = (info.count as usize).div_ceil(PAGE_ENTRIES);
        let expected = (HEADER + info.count as usize * ENTRY + pages * CHECK) as u64;
        let len = file.metadata().map_err(|e| damage(&path, e.to_string()))?.len();
        if len != expected {
            return Err(damage(&path, format!("{len} bytes, expected {expected}")));
        }
        Ok(RunCursor {
            info,
            path,
            file,
            page: 0,
            buf: Vec::with_capacity(PAGE_BYTES + CHECK),
            at: 0,
        })
    }

    /// Reads a run whole, checking its header against the manifest and every page's checksum and
    /// order, and builds its filter and index.
    fn open_run(&self, info: RunInfo) -> Result<ColdRun, ColdDamage> {
        let mut cursor = self.cursor(info)?;
        let mut filter = Filter::with_capacity(info.count as usize);
        let mut index = Vec::with_capacity((info.count as usize).div_ceil(PAGE_ENTRIES));
        let mut last: Option<(u64, u64)> = None;
        let mut n = 0usize;
        while let Some(entry) = cursor.next_entry()? {
            if last.is_some_and(|l| l >= entry) {
                return Err(damage(&cursor.path, format!("entry {n} is out of order")));
            }
            if n.is_multiple_of(PAGE_ENTRIES) {
                index.push(entry.0);
            }
            last = Some(entry);
            filter.insert(entry.0);
            n += 1;
        }
        let RunCursor { path, file, .. } = cursor;
        Ok(ColdRun {
            info,
            path,
            file,
            filter,
            index,
        })
    }

    /// Deletes a run's file (after a manifest without it is durable).
    pub fn remove_run(&self, id: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.run_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u64) -> u128 {
        let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
        (u128::from(i & 0xFF_FFFF) << 64) | u128::from(mix(k))
    }

    fn entries(n: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = (0..n)
            .map(|i| {
                let f = fp(i);
                (f as u64, (((f >> 64) as u64 & 0xFF_FFFF) << 24) | (i & 0xFF_FFFF))
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ratingd-cold-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_run_finds_what_it_holds_and_survives_a_reopen() {
        let root = tempdir("reopen");
        let dir = ColdDir::new(&root, 1, 2);
        let e = entries(10_000);
        let run = dir.write_run(7, 100, 101, &e).expect("written");
        dir.write_manifest(&Manifest {
            next_id: 8,
            runs: vec![run.info],
        })
        .expect("manifest");
        std::fs::write(dir.path().join("run-0000000000000003.cold"), b"left over").expect("leftover");
        let (manifest, runs) = dir.open().expect("opens");
        assert_eq!(manifest.next_id, 8);
        assert!(
            !dir.path().join("run-0000000000000003.cold").exists(),
            "leftovers are deleted"
        );
        for r in [&run, &runs[0]] {
            for i in (0..10_000).step_by(97) {
                let v = r.lookup(fp(i)).expect("readable").expect("held");
                assert_eq!(v & 0xFF_FFFF, i & 0xFF_FFFF);
            }
            assert_eq!(r.lookup(fp(20_000)).expect("readable"), None);
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ids_sharing_their_low_bits_across_a_page_boundary_are_found() {
        let root = tempdir("boundary");
        let dir = ColdDir::new(&root, 0, 1);
        let mut e: Vec<(u64, u64)> = (0..PAGE_ENTRIES as u64 - 1).map(|i| (i, 0)).collect();
        e.push((1000, 1 << 24));
        e.push((1000, 2 << 24));
        e.push((1000, 3 << 24));
        let run = dir.write_run(1, 5, 5, &e).expect("written");
        for extra in 1..=3u128 {
            assert_eq!(
                run.lookup((extra << 64) | 1000).expect("readable"),
                Some((extra as u64) << 24)
            );
        }
        assert_eq!(run.lookup((4u128 << 64) | 1000).expect("readable"), None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn the_filter_rarely_says_maybe_for_an_absent_id() {
        let n = 200_000u64;
        let mut f = Filter::with_capacity(n as usize);
        for i in 0..n {
            f.insert(fp(i) as u64);
        }
        assert!((0..n).all(|i| f.may_contain(fp(i) as u64)), "no false negative");
        let false_maybes = (n..n * 6).filter(|&i| f.may_contain(fp(i) as u64)).count();
        let rate = false_maybes as f64 / (n * 5) as f64;
        eprintln!(
            "false maybe rate {rate:.5}, {} bytes per id",
            f.heap_bytes() as f64 / n as f64
        );
        assert!(rate < 0.003, "false maybe rate {rate}");
        assert!(f.heap_bytes() as f64 / (n as f64) < 1.95);
    }

    #[test]
    fn damage_is_detected_with_the_path() {
        let root = tempdir("damage");
        let dir = ColdDir::new(&root, 0, 1);
        let run = dir.write_run(1, 5, 6, &entries(5_000)).expect("written");
        dir.write_manifest(&Manifest {
            next_id: 2,
            runs: vec![run.info],
        })
        .expect("manifest");
        let path = run.path().to_path_buf();
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER + 3 * (PAGE_BYTES + CHECK) + 100] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let err = dir.open().err().expect("damage found at open");
        assert!(err.path.ends_with("run-0000000000000001.cold"), "{err}");
        assert!(err.why.contains("page 3"), "{err}");
        // The run opened before the damage finds it when it reads that page.
        let hit = (3 * PAGE_ENTRIES..4 * PAGE_ENTRIES)
            .map(|i| entries(5_000)[i].0)
            .map(|k| run.lookup(u128::from(k) | (0xFFu128 << 80)));
        assert!(
            hit.into_iter().any(|r| r.is_err()),
            "a lookup reading the damaged page fails"
        );
        std::fs::remove_file(&path).expect("remove");
        let err = dir.open().err().expect("a missing run is damage");
        assert!(err.to_string().contains("run-0000000000000001.cold"), "{err}");
        std::fs::write(dir.path().join("manifest"), b"RDM1 garbage").expect("write");
        assert!(dir.open().is_err(), "a damaged manifest is damage");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_manifest_of_another_shard_count_is_not_used() {
        let root = tempdir("shards");
        ColdDir::new(&root, 0, 2)
            .write_manifest(&Manifest::default())
            .expect("manifest");
        let err = ColdDir::new(&root, 0, 4).open().err().expect("refused");
        assert!(err.why.contains("shard count"), "{err}");
        let _ = std::fs::remove_dir_all(root);
    }
}
