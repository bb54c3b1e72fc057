//! Keeps the daemon's resident memory to what it uses, for a box left alone for months.
//!
//! Promises: malloc hands freed pictures back at once and its free pages every pass;
//! and every pass the pages of program code and read-only data that nothing has read
//! since the last pass leave the process (they stay in the page cache: one read
//! brings a page back). Nothing a pass drops holds data of the process's own: only
//! segments that were never writable are touched.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The first pass, once the model is loaded and the cameras have connected.
const FIRST_PASS: Duration = Duration::from_secs(10);
/// How often free heap pages and unused code pages are handed back after that.
const PASS_EVERY: Duration = Duration::from_secs(30);

/// Keeps glibc's malloc from holding on to memory over months of reconnects. Each
/// camera session starts threads and frees megabytes of pictures; by default glibc
/// gives busy threads arenas of their own (up to 8 per core) and raises its mmap
/// threshold as large blocks are freed, so freed pictures stay in fragmented arenas
/// and the resident size creeps up (+15 % over 100 reconnects, measured). Two arenas
/// and a fixed threshold hand large blocks back to the system when freed.
pub fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// `FIRST_PASS` after start and every `PASS_EVERY`, on a blocking thread: malloc's free pages back to the system
/// (small blocks of ONNX Runtime, GStreamer and the network free pages in the middle
/// of a heap that glibc keeps until asked: about 7 MB at 4 cameras), then code pages
/// nothing ran since the last pass.
pub async fn keep_small(stop: CancellationToken) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_PASS, PASS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let released = tokio::task::spawn_blocking(|| {
            let started = std::time::Instant::now();
            // SAFETY: malloc_trim only returns free memory; it is safe to call at any time.
            unsafe { libc::malloc_trim(0) };
            (code::release(), started.elapsed())
        })
        .await;
        if let Ok((bytes, took)) = released {
            debug!(bytes, ?took, "memory pass: free heap and unused code pages released");
        }
    }
}

/// Code and read-only data of the program and its libraries. Most of what a process
/// maps of them is read once: ONNX Runtime registers hundreds of kernels and
/// optimises the graph at load, and the decoder's library pulls in some 170 others
/// (codecs, fonts, speech voices) that are relocated and never called. Those pages
/// stay counted in the resident size until the kernel runs short of memory. Dropping
/// them from the process's page tables costs one minor fault for each page that is
/// used again (a few hundred a pass: the pipeline's hot code is small).
mod code {
    use std::ffi::{c_int, c_void};

    use libc::{Elf64_Phdr, PF_W, PT_DYNAMIC, PT_GNU_RELRO, PT_LOAD, dl_phdr_info};

    /// `getauxval` key of the kernel's vDSO, not a file and not ours to touch.
    const AT_SYSINFO_EHDR: libc::c_ulong = 33;
    /// Dynamic section tags that say the object writes into its code.
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;

    /// Releases the never-writable segments of every loaded object; returns the bytes
    /// advised. Runs inside `dl_iterate_phdr`, which holds the loader's lock, so no
    /// library is being mapped or relocated while it runs.
    pub fn release() -> u64 {
        let mut bytes: u64 = 0;
        // SAFETY: the callback only reads the loader's program headers for the
        // duration of the call and advises page ranges inside read-only segments.
        unsafe { libc::dl_iterate_phdr(Some(each_object), (&raw mut bytes).cast()) };
        bytes
    }

    unsafe extern "C" fn each_object(info: *mut dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: the loader passes a valid info for this call, and `data` is `release`'s counter.
        let (info, bytes) = unsafe { (&*info, &mut *data.cast::<u64>()) };
        // SAFETY: getauxval only reads the process's auxiliary vector.
        if info.dlpi_phdr.is_null() || info.dlpi_addr == unsafe { libc::getauxval(AT_SYSINFO_EHDR) } {
            return 0;
        }
        // SAFETY: the loader's header table for this object has dlpi_phnum entries.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        // SAFETY: a PT_DYNAMIC header points at the object's mapped dynamic section.
        if unsafe { writes_its_code(info.dlpi_addr, headers) } {
            return 0;
        }
        let relro = headers.iter().filter(|h| h.p_type == PT_GNU_RELRO).map(|h| span(info.dlpi_addr, h));
        let relro: Vec<(u64, u64)> = relro.collect();
        for h in headers.iter().filter(|h| h.p_type == PT_LOAD && h.p_flags & PF_W == 0) {
            let (start, end) = span(info.dlpi_addr, h);
            if relro.iter().any(|&(s, e)| s < end && start < e) {
                continue; // relocated at load: the process's own data
            }
            *bytes += advise(start, end);
        }
        0
    }

    /// The address range a header covers in memory.
    fn span(base: u64, h: &Elf64_Phdr) -> (u64, u64) {
        (base + h.p_vaddr, base + h.p_vaddr + h.p_memsz)
    }

    /// Whether the object was linked with relocations in its code (its code pages
    /// are then written at load, so dropping them would lose the relocations).
    ///
    /// # Safety
    /// `headers` must be the loader's program headers of the object loaded at `base`.
    unsafe fn writes_its_code(base: u64, headers: &[Elf64_Phdr]) -> bool {
        let Some(dynamic) = headers.iter().find(|h| h.p_type == PT_DYNAMIC) else { return false };
        let mut entry = (base + dynamic.p_vaddr) as *const [u64; 2];
        loop {
            // SAFETY: the dynamic section is mapped and ends with a DT_NULL entry.
            let [tag, value] = unsafe { *entry };
            match tag as i64 {
                0 => return false,
                DT_TEXTREL => return true,
                DT_FLAGS if value & DF_TEXTREL != 0 => return true,
                _ => {}
            }
            // SAFETY: not past DT_NULL yet.
            entry = unsafe { entry.add(1) };
        }
    }

    /// Advises the whole pages inside `start..end` as not needed; returns their bytes.
    fn advise(start: u64, end: u64) -> u64 {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let (from, to) = (start.div_ceil(page) * page, end / page * page);
        if to <= from {
            return 0;
        }
        // SAFETY: the range lies in a loaded object's segment that was never writable,
        // so its pages hold only what its file holds, and the loader's lock keeps it
        // mapped: dropping them loses nothing (a later read maps them again).
        let done = unsafe { libc::madvise(from as *mut c_void, (to - from) as usize, libc::MADV_DONTNEED) };
        if done == 0 { to - from } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident kB of file pages (code, read-only data) and of the process's own memory.
    fn resident() -> (u64, u64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb = |key: &str| {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
        };
        (kb("RssFile:"), kb("RssAnon:"))
    }

    #[test]
    fn a_pass_releases_code_pages_and_the_code_still_runs() {
        // Pull in and run a large library's code, as the daemon does at start.
        let jpeg = {
            let picture = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 7]));
            let mut out = std::io::Cursor::new(Vec::new());
            picture.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
            out.into_inner()
        };
        let (file_before, anon_before) = resident();
        let released = code::release();
        let (file_after, anon_after) = resident();
        assert!(released > 1 << 20, "released {released} bytes");
        assert!(file_after + 1024 < file_before, "file pages {file_before} -> {file_after} kB");
        // Only file pages went: the process's own data is where it was.
        assert!(anon_after + 1024 >= anon_before, "anonymous {anon_before} -> {anon_after} kB");
        // The code comes back from the page cache when it runs again, and does the same.
        let decoded = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 240));
        let again = code::release();
        assert!(again > 0);
    }
}
