//! `iocomp get -j N`: one probe (`Range: bytes=0-0`) learns the size and the
//! validator; then N connections each fetch one range with `If-Range` and
//! write it in place (`pwrite`) into `NAME.part`. A server without range
//! support gets one plain download instead.

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{finish, get, local, sequential, side, start_part, Limiter, Opts, CHUNK};
use crate::client::{net, Fail};
use crate::progress::Progress;
use crate::target::Target;

/// Below this size a file is fetched on one connection.
const MIN_PARALLEL: u64 = 1024 * 1024;

pub(super) fn download(t: Target, out: &Path, opts: &Opts, p: &Progress) -> Result<(), Fail> {
    let (t, probe) = get(t, &[("Range", "bytes=0-0".to_string())], opts)?;
    let total = match (probe.head.status, probe.head.content_range()) {
        (206, Some((0, 0, Some(total)))) if total >= MIN_PARALLEL => total,
        // No ranges, small, or an error status: one connection says it all.
        _ => {
            drop(probe);
            return sequential(t, out, opts, p);
        }
    };
    let validator = probe.head.validator();
    drop(probe);
    let part = side(out, ".part");
    let meta = side(out, ".part.meta");
    let file = start_part(&part, &meta, None)?;
    file.set_len(total).map_err(|e| local(&part, e))?;
    p.start(Some(total), 0);
    let n = opts.parallel as u64;
    let per = total.div_ceil(n);
    let result: Result<(), Fail> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .map(|i| (i * per, ((i + 1) * per).min(total)))
            .filter(|(a, b)| a < b)
            .map(|(a, b)| {
                let (t, file, validator) = (&t, &file, &validator);
                s.spawn(move || range(t, file, a, b - 1, validator.as_deref(), opts, p))
            })
            .collect();
        let mut first = Ok(());
        for w in workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(Fail::Local("a range thread panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first
    });
    if let Err(e) = result {
        // A file with holes must never be resumed as if it were a prefix.
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    drop(file);
    finish(&part, &meta, out)
}

/// Fetches bytes `first..=last` and writes them at their offset.
fn range(
    t: &Target,
    file: &fs::File,
    first: u64,
    last: u64,
    validator: Option<&str>,
    opts: &Opts,
    p: &Progress,
) -> Result<(), Fail> {
    let mut extra = vec![("Range", format!("bytes={first}-{last}"))];
    if let Some(v) = validator {
        extra.push(("If-Range", v.to_string()));
    }
    let (_, mut r) = get(t.clone(), &extra, opts)?;
    if r.head.status != 206 || r.head.content_range().map(|(a, b, _)| (a, b)) != Some((first, last))
    {
        return Err(Fail::Network(format!(
            "range {first}-{last} answered {} {} (the file changed meanwhile?)",
            r.head.status, r.head.reason
        )));
    }
    let mut buf = vec![0u8; CHUNK];
    let mut at = first;
    let mut limiter = Limiter::new(opts.limit.map(|l| (l / opts.parallel as u64).max(1)));
    while at <= last {
        let n = match r.body.read(&mut buf) {
            Ok(0) => return Err(Fail::Network(format!("range {first}-{last} ended at {at}"))),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(net("receiving a range", e)),
        };
        let n = n.min((last + 1 - at) as usize);
        file.write_all_at(&buf[..n], at)
            .map_err(|e| Fail::Local(format!("writing the output: {e}")))?;
        at += n as u64;
        p.add(n as u64);
        limiter.wait(n as u64);
    }
    Ok(())
}
