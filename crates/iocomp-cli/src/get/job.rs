//! One URL's download: what its connections' responses mean for the output
//! file. The transport ([`super::driver`]) reports heads, body bytes, ends and
//! failures; a job answers them, writes the bytes where they belong (`pwrite`)
//! and, when its last connection is gone, renames `NAME.part` to `NAME` — or
//! leaves a resumable `.part` (one connection), or removes it (a parallel
//! download's `.part` has holes).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use super::body::Coding;
use super::{finish, local, open_error, open_existing, raw, side, start_part, Meta, Opts};
use crate::client::{Fail, Head};
use crate::progress::{human, Progress};
use crate::target::Target;

/// Below this size a file is fetched on one connection even with `-j`.
const MIN_PARALLEL: u64 = 1024 * 1024;

/// What one connection of a job does.
#[derive(Clone, Copy, Debug)]
pub(super) enum Role {
    /// The whole file (from `offset` when resuming).
    Main { offset: u64 },
    /// `-j`: `Range: bytes=0-0`, to learn the size and the validator.
    Probe,
    /// `-j`: bytes `first..=last`.
    Range { first: u64, last: u64 },
    /// The line protocol.
    Raw,
}

/// A connection to start.
pub(super) struct Spec {
    pub(super) job: usize,
    pub(super) role: Role,
    pub(super) target: Target,
    pub(super) extra: Vec<(&'static str, String)>,
}

/// What a connection does after its response head.
pub(super) enum Next {
    /// Receive the body and write it from `at`; `exact`: a range's body,
    /// which must be exactly that many bytes (in whatever framing).
    Body {
        at: u64,
        coding: Option<Coding>,
        exact: Option<u64>,
    },
    /// Close it: its part is done (a probe that started the ranges, a 416
    /// saying the partial file is whole).
    Close,
}

/// Why a response cannot continue what is on disk: the file changed.
fn changed(why: String) -> Fail {
    Fail::Network(format!("the file changed on the server ({why})"))
}

/// Whether `head` is the version `validator` and `weak` name: each one
/// saved must be repeated (a weak ETag byte for byte).
fn same_version(
    validator: &Option<String>,
    weak: &Option<String>,
    head: &Head,
) -> Result<(), String> {
    if let Some(v) = validator {
        if head.validator().as_ref() != Some(v) {
            return Err(format!(
                "validator {v} saved, {} now",
                head.validator().unwrap_or_else(|| "none".into())
            ));
        }
    }
    if let Some(w) = weak {
        if head.weak_etag().as_ref() != Some(w) {
            return Err(format!(
                "ETag {w} saved, {} now",
                head.get("etag").unwrap_or("none")
            ));
        }
    }
    Ok(())
}

/// Whether a validator `head` carries (a 416 need not carry one) says it is
/// another version than `validator` and `weak`.
fn contradicts(validator: &Option<String>, weak: &Option<String>, head: &Head) -> Option<String> {
    if let Some(now) = head.validator() {
        if validator.as_ref() != Some(&now) {
            return Some(format!(
                "validator {} saved, {now} now",
                validator.as_deref().unwrap_or("none")
            ));
        }
    }
    if let Some(now) = head.weak_etag() {
        if weak.as_ref() != Some(&now) {
            return Some(format!(
                "ETag {} saved, {now} now",
                weak.as_deref().unwrap_or("none")
            ));
        }
    }
    None
}

/// Opens `part` (creating it, never truncating it, never through a symbolic
/// link) and takes an exclusive `flock` on it, held until the job ends, so
/// that two downloads never write one file; whether it was created.
fn lock_part(part: &std::path::Path) -> Result<(File, bool), Fail> {
    let (f, created) = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)
    {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (open_existing(part, true)?, false),
        Err(e) => return Err(open_error(part, e)),
    };
    match crate::sys::try_lock_exclusive(&f) {
        Ok(true) => Ok((f, created)),
        Ok(false) => Err(Fail::Local(format!(
            "another download is writing {}",
            part.display()
        ))),
        Err(e) => Err(local(part, e)),
    }
}

/// One URL's download.
pub(super) struct Job {
    pub(super) target: Target,
    pub(super) out: PathBuf,
    pub(super) part: PathBuf,
    pub(super) meta: PathBuf,
    pub(super) progress: Progress,
    file: Option<File>,
    /// Connections alive (kept by the driver).
    pub(super) live: usize,
    /// The first failure.
    pub(super) failed: Option<Fail>,
    /// Ranges still to complete (parallel), or 1.
    pub(super) left: usize,
    /// Connections to start (drained by the driver).
    pub(super) spawn: Vec<Spec>,
    /// Whether the `.part` may hold holes (parallel): removed on failure.
    sparse: bool,
    /// This job's index among the driver's jobs.
    index: usize,
    /// What the partial file being resumed is a prefix of (its `.meta`).
    saved: Meta,
    /// A parallel download: the validator, weak ETag and total of the
    /// probe's answer, which every part must repeat.
    probe: Option<(Option<String>, Option<String>, u64)>,
    /// The file's size when known (a 200's Content-Length, a 206's
    /// Content-Range total): the download is complete only at that size.
    total: Option<u64>,
    /// The `flock` on the `.part`, held until the job ends.
    lock: Option<File>,
    /// Whether this job created the `.part`: removed on failure if nothing
    /// was ever written to it (see `started`).
    created: bool,
    /// Whether the `.part` was opened for the body (a download started).
    started: bool,
    /// Why what was received cannot be joined to what is on disk: the job
    /// starts afresh once its connections are gone.
    afresh: Option<String>,
    /// Whether it already started afresh once.
    restarted: bool,
    /// `-c` continues the output file itself, a partial download left by
    /// another tool (as `wget -c` does): `part` is `out`, nothing is renamed,
    /// and it is never overwritten by a download afresh.
    foreign: bool,
    /// Body bytes of a `--raw` download.
    pub(super) got: u64,
    pub(super) result: Option<Result<(), Fail>>,
}

impl Job {
    /// A job for `t` into `out`, with its first connection in `spawn`.
    pub(super) fn new(
        index: usize,
        t: Target,
        out: PathBuf,
        opts: &Opts,
        progress: Progress,
    ) -> Job {
        let mut job = Job {
            part: side(&out, ".part"),
            meta: side(&out, ".part.meta"),
            target: t.clone(),
            out,
            progress,
            file: None,
            live: 0,
            failed: None,
            left: 1,
            spawn: Vec::new(),
            sparse: false,
            index,
            saved: Meta::default(),
            probe: None,
            total: None,
            lock: None,
            created: false,
            started: false,
            afresh: None,
            restarted: false,
            foreign: false,
            got: 0,
            result: None,
        };
        let out_meta = fs::symlink_metadata(&job.out);
        let foreign = opts.resume
            && !opts.force
            && !t.raw
            && out_meta.as_ref().is_ok_and(|m| m.is_file() && m.len() > 0)
            && fs::symlink_metadata(&job.part).is_err();
        if foreign {
            job.foreign = true;
            job.part = job.out.clone();
        } else if out_meta.is_ok() && !opts.force {
            job.failed = Some(Fail::Local(format!(
                "{} exists; use --force to overwrite it",
                job.out.display()
            )));
            return job;
        }
        match lock_part(&job.part) {
            Ok((f, created)) => {
                job.lock = Some(f);
                job.created = created;
            }
            Err(e) => {
                job.failed = Some(e);
                return job;
            }
        }
        let mut extra = Vec::new();
        let role = if t.raw {
            Role::Raw
        } else {
            let offset = if opts.resume { job.resume_point() } else { 0 };
            if opts.compressed {
                extra.push(("Accept-Encoding", "gzip, deflate".to_string()));
            }
            if offset > 0 {
                extra.push(("Range", format!("bytes={offset}-")));
                match &job.saved.validator {
                    Some(v) => extra.push(("If-Range", v.clone())),
                    None if job.foreign => job.progress.note(&format!(
                        "continuing {} (no validator known: only the size is checked)",
                        job.out.display()
                    )),
                    // A weak ETag alone: checked on the 206 (If-Range cannot carry it).
                    None => {}
                }
                Role::Main { offset }
            } else if opts.parallel > 1 {
                extra.push(("Range", "bytes=0-0".to_string()));
                Role::Probe
            } else {
                Role::Main { offset: 0 }
            }
        };
        job.spawn.push(Spec {
            job: index,
            role,
            target: t,
            extra,
        });
        job
    }

    /// The length of a resumable `NAME.part` (and what its `.meta` says), or 0.
    fn resume_point(&mut self) -> u64 {
        let Ok(m) = fs::symlink_metadata(&self.part) else {
            return 0;
        };
        if !m.is_file() {
            return 0;
        }
        if self.foreign {
            return m.len();
        }
        if m.len() == 0 {
            return 0;
        }
        let meta = Meta::read(&self.meta);
        if meta.parallel {
            self.progress.note(
                "the partial file is from a parallel download (-j), which leaves holes: downloading afresh",
            );
            return 0;
        }
        if meta.validator.is_none() && meta.weak.is_none() {
            // curl -C trusts the server here; two versions could be joined.
            self.progress.note(&format!(
                "{} was saved without a validator (the server sent no ETag or Last-Modified), so its version cannot be checked: downloading afresh",
                self.part.display()
            ));
            return 0;
        }
        self.saved = meta;
        m.len()
    }

    /// Whether a 206 answering `Range: bytes=OFFSET-` continues the saved
    /// partial file: the range starts at `offset` and runs to the end of a
    /// total that is the one saved, and the validator is the one saved.
    /// `Ok(total)`, else why not.
    fn continues(&self, head: &Head, offset: u64) -> Result<u64, String> {
        let Some((a, b, Some(total))) = head.content_range() else {
            return Err("a 206 without a usable Content-Range".into());
        };
        if a != offset || b.checked_add(1) != Some(total) {
            return Err(format!(
                "asked for bytes {offset}- and got bytes {a}-{b}/{total}"
            ));
        }
        if let Some(n) = head.content_length() {
            if n != b - a + 1 {
                return Err(format!("Content-Length {n} disagrees with bytes {a}-{b}"));
            }
        }
        if let Some(t) = self.saved.total {
            if t != total {
                return Err(format!("its size was {t} bytes and is now {total}"));
            }
        }
        same_version(&self.saved.validator, &self.saved.weak, head)?;
        Ok(total)
    }

    /// Whether a 416 `bytes */LEN` to `Range: bytes=OFFSET-` says the saved
    /// partial file is whole: a validator was saved, the answer does not
    /// contradict it (its own validator, if any, is the same; with none, the
    /// server evaluated our `If-Range` — RFC 9110 §13.1.5 — before the
    /// range), something vouches for the version (the answer's validator,
    /// or the total saved, equal to LEN), and LEN is the local size.
    /// `Ok(true)`: whole; `Ok(false)`: not ours to judge (a plain 416
    /// error); `Err`: the file changed.
    fn whole_already(&self, head: &Head, offset: u64) -> Result<bool, String> {
        let len = head.unsatisfied_total();
        let saved = &self.saved;
        if saved.validator.is_none() && saved.weak.is_none() {
            return match len {
                Some(n) if n == offset => {
                    Err("no validator saved to prove the partial file is this one".into())
                }
                _ => Ok(false),
            };
        }
        if let Some(why) = contradicts(&saved.validator, &saved.weak, head) {
            return Err(why);
        }
        if let (Some(t), Some(n)) = (saved.total, len) {
            if t != n {
                return Err(format!("its size was {t} bytes and is now {n}"));
            }
        }
        let vouched =
            head.validator().is_some() || head.weak_etag().is_some() || saved.total.is_some();
        Ok(vouched && len == Some(offset))
    }

    /// Whether a part of a parallel download agrees with the probe: exactly
    /// the range asked for, of the same total, with the same validator.
    fn part_fits(&self, head: &Head, first: u64, last: u64) -> Result<(), String> {
        let Some((v, w, total)) = &self.probe else {
            return Err("no probe".into());
        };
        if head.status == 200 {
            return Err("a range was answered with the whole file".into());
        }
        if head.content_range() != Some((first, last, Some(*total))) {
            return Err(format!(
                "asked for bytes {first}-{last}/{total}, got {}",
                head.get("content-range").unwrap_or("no Content-Range")
            ));
        }
        if let Some(n) = head.content_length() {
            if n != last - first + 1 {
                return Err(format!(
                    "Content-Length {n} disagrees with bytes {first}-{last}"
                ));
            }
        }
        same_version(v, w, head).map_err(|why| format!("a later part: {why}"))
    }

    /// Gives up on what was received: the job starts afresh when its last
    /// connection is gone; the error that stops this connection.
    fn start_afresh(&mut self, why: String) -> Fail {
        if self.foreign {
            return self.not_overwriting(&why);
        }
        let f = changed(why.clone());
        if self.afresh.is_none() {
            self.afresh = Some(why);
        }
        f
    }

    /// The server's answer cannot continue a foreign partial file, and a
    /// download afresh would destroy it (wget -c refuses too).
    fn not_overwriting(&self, why: &str) -> Fail {
        Fail::Local(format!(
            "{}: the server's answer does not continue it ({why}); not overwriting it (use --force to download it afresh)",
            self.out.display()
        ))
    }

    /// Called when the last connection is gone: if a mismatch asked for it
    /// (and it has not happened yet), the job starts over with one plain
    /// request for the whole file; `true` when it did (see [`Job::spawn`]).
    pub(super) fn restart_afresh(&mut self) -> bool {
        let Some(why) = self.afresh.take() else {
            return false;
        };
        if self.restarted {
            return false;
        }
        self.restarted = true;
        self.failed = None;
        drop(self.file.take());
        self.sparse = false;
        self.left = 1;
        self.saved = Meta::default();
        self.probe = None;
        self.total = None;
        self.progress.note(&format!(
            "the file changed on the server ({why}): downloading afresh"
        ));
        self.spawn.push(Spec {
            job: self.index,
            role: Role::Main { offset: 0 },
            target: self.target.clone(),
            extra: Vec::new(),
        });
        true
    }

    /// A connection's response head.
    pub(super) fn on_head(
        &mut self,
        index: usize,
        role: &mut Role,
        t: &Target,
        head: &Head,
        opts: &Opts,
    ) -> Result<Next, Fail> {
        let status_error = || Fail::Http(format!("{} {}", head.status, head.reason));
        match *role {
            Role::Raw => Ok(Next::Body {
                at: 0,
                coding: None,
                exact: None,
            }),
            Role::Main { offset } => match head.status {
                200 if offset > 0 && self.foreign => {
                    Err(self.not_overwriting("it sent the whole file, not the rest"))
                }
                200 => {
                    if offset > 0 {
                        self.progress.note(
                            "the file changed on the server (or it ignores ranges): downloading afresh",
                        );
                    }
                    *role = Role::Main { offset: 0 };
                    self.whole(head, opts)
                }
                206 if offset > 0 => {
                    let total = self
                        .continues(head, offset)
                        .map_err(|w| self.start_afresh(w))?;
                    let coding = super::content_coding(head, opts)?;
                    self.progress
                        .note(&format!("resuming at {}", human(offset as f64)));
                    self.open_for_body(open_existing(&self.part, true)?);
                    self.total = Some(total);
                    self.progress.start(Some(total), offset);
                    Ok(Next::Body {
                        at: offset,
                        coding,
                        exact: Some(total - offset),
                    })
                }
                416 if offset > 0 && self.foreign && head.unsatisfied_total() == Some(offset) => {
                    // As wget -c: the server's size is the local size; nothing to do.
                    self.progress.note(&format!(
                        "{} is already whole (by its size; no validator known)",
                        self.out.display()
                    ));
                    self.left = 0;
                    Ok(Next::Close)
                }
                416 if offset > 0 => match self.whole_already(head, offset) {
                    Ok(true) => {
                        self.left = 0;
                        Ok(Next::Close)
                    }
                    Ok(false) => Err(status_error()),
                    Err(why) => Err(self.start_afresh(why)),
                },
                _ => Err(status_error()),
            },
            Role::Probe => match (head.status, head.content_range()) {
                (206, Some((0, 0, Some(total))))
                    if total >= MIN_PARALLEL
                        && head.validator().is_none()
                        && head.weak_etag().is_none() =>
                {
                    self.progress.note(
                        "the server sends no validator (ETag or Last-Modified), so parts could not be proved one version: one connection",
                    );
                    self.spawn.push(Spec {
                        job: index,
                        role: Role::Main { offset: 0 },
                        target: t.clone(),
                        extra: Vec::new(),
                    });
                    Ok(Next::Close)
                }
                (206, Some((0, 0, Some(total)))) if total >= MIN_PARALLEL => {
                    super::content_coding(head, opts)?;
                    self.probe = Some((head.validator(), head.weak_etag(), total));
                    self.ranges(index, t, total, head.validator(), opts)?;
                    Ok(Next::Close)
                }
                // No ranges: this response is the whole file.
                (200, _) => {
                    *role = Role::Main { offset: 0 };
                    self.whole(head, opts)
                }
                // Small: one plain download.
                (206, _) => {
                    self.spawn.push(Spec {
                        job: index,
                        role: Role::Main { offset: 0 },
                        target: t.clone(),
                        extra: Vec::new(),
                    });
                    Ok(Next::Close)
                }
                _ => Err(status_error()),
            },
            Role::Range { first, last } => {
                if head.status == 416 {
                    // The file shrank or changed since the probe: afresh.
                    if let Some((v, w, total)) = &self.probe {
                        let why = match head.unsatisfied_total() {
                            Some(n) if n != *total => {
                                Some(format!("its size was {total} bytes and is now {n}"))
                            }
                            _ => contradicts(v, w, head),
                        };
                        if let Some(why) = why {
                            return Err(self.start_afresh(why));
                        }
                    }
                    return Err(status_error());
                }
                if head.status != 206 && head.status != 200 {
                    return Err(status_error());
                }
                self.part_fits(head, first, last)
                    .map_err(|w| self.start_afresh(w))?;
                super::content_coding(head, opts)?;
                Ok(Next::Body {
                    at: first,
                    coding: None,
                    exact: Some(last - first + 1),
                })
            }
        }
    }

    /// A 200: the whole file into a fresh `.part`.
    fn whole(&mut self, head: &Head, opts: &Opts) -> Result<Next, Fail> {
        let coding = super::content_coding(head, opts)?;
        // A compressed body's length on the wire is not the file's: no total.
        let total = if coding.is_some() {
            None
        } else {
            super::body::Framing::of(head).len_hint()
        };
        let meta = Meta {
            validator: head.validator(),
            weak: head.weak_etag(),
            total,
            parallel: false,
        };
        self.open_for_body(start_part(&self.part, &self.meta, &meta)?);
        self.total = total;
        self.progress.start(total, 0);
        Ok(Next::Body {
            at: 0,
            coding,
            exact: None,
        })
    }

    /// Sizes the `.part` and queues one connection per range.
    fn ranges(
        &mut self,
        index: usize,
        t: &Target,
        total: u64,
        validator: Option<String>,
        opts: &Opts,
    ) -> Result<(), Fail> {
        let parallel = Meta {
            parallel: true,
            ..Meta::default()
        };
        let file = start_part(&self.part, &self.meta, &parallel)?;
        file.set_len(total).map_err(|e| local(&self.part, e))?;
        self.open_for_body(file);
        self.total = Some(total);
        self.sparse = true;
        self.progress.start(Some(total), 0);
        let n = opts.parallel as u64;
        let per = total.div_ceil(n);
        self.left = 0;
        for i in 0..n {
            let (first, end) = (i * per, ((i + 1) * per).min(total));
            if first >= end {
                continue;
            }
            let mut extra = vec![("Range", format!("bytes={first}-{}", end - 1))];
            if let Some(v) = &validator {
                extra.push(("If-Range", v.clone()));
            }
            self.left += 1;
            self.spawn.push(Spec {
                job: index,
                role: Role::Range {
                    first,
                    last: end - 1,
                },
                target: t.clone(),
                extra,
            });
        }
        Ok(())
    }

    /// `--raw`: the name was sent; the reply goes into a fresh `.part`.
    pub(super) fn raw_start(&mut self, opts: &Opts) -> Result<(), Fail> {
        self.open_for_body(start_part(&self.part, &self.meta, &Meta::default())?);
        self.progress.start(opts.size, 0);
        Ok(())
    }

    /// Keeps `f` as the file body bytes go to.
    fn open_for_body(&mut self, f: File) {
        self.file = Some(f);
        self.started = true;
    }

    /// Body bytes for offset `at`.
    pub(super) fn on_data(&mut self, at: u64, data: &[u8]) -> Result<(), Fail> {
        let Some(f) = &self.file else {
            return Err(Fail::Local("no output file open".into()));
        };
        f.write_all_at(data, at).map_err(|e| local(&self.part, e))?;
        self.progress.add(data.len() as u64);
        Ok(())
    }

    /// A connection's body is complete; `end` is the offset after its last byte.
    pub(super) fn on_end(&mut self, role: Role, end: u64) {
        if let Role::Raw = role {
            self.got = end;
        }
        self.left = self.left.saturating_sub(1);
    }

    /// Records a failure (the first one counts).
    pub(super) fn fail(&mut self, f: Fail) {
        if self.failed.is_none() {
            self.failed = Some(f);
        }
    }

    /// The last connection is gone: rename, or clean up; the result.
    pub(super) fn settle(&mut self, opts: &Opts) -> Result<(), Fail> {
        drop(self.file.take());
        // Released when this returns: after the rename, or the cleanup.
        let _lock = self.lock.take();
        if self.failed.is_none() && self.left > 0 {
            self.failed = Some(Fail::Network("the download stopped unfinished".into()));
        }
        if self.failed.is_none() && self.target.raw {
            if let Err(e) = raw::check(&self.part, self.got, opts.size) {
                self.failed = Some(e);
            }
        }
        if let (None, Some(total)) = (&self.failed, self.total) {
            // Whatever the framing said, the file is complete only at its size.
            match fs::symlink_metadata(&self.part) {
                Ok(m) if m.len() == total => {}
                Ok(m) => {
                    self.failed = Some(Fail::Network(format!(
                        "the download stopped at {} of {total} bytes",
                        m.len()
                    )))
                }
                Err(e) => self.failed = Some(local(&self.part, e)),
            }
        }
        match self.failed.take() {
            Some(e) => {
                if self.created && !self.started && !self.foreign {
                    // Nothing was received: leave no empty `.part` behind.
                    let _ = fs::remove_file(&self.part);
                    let _ = fs::remove_file(&self.meta);
                }
                if self.sparse {
                    // A file with holes must never be resumed as if it were a prefix.
                    let _ = fs::remove_file(&self.part);
                    let _ = fs::remove_file(&self.meta);
                }
                Err(e)
            }
            None if self.foreign => Ok(()),
            None => finish(&self.part, &self.meta, &self.out, opts.force),
        }
    }
}
