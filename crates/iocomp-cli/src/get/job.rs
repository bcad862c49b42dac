//! One URL's download: what its connections' responses mean for the output
//! file. The transport ([`super::driver`]) reports heads, body bytes, ends and
//! failures; a job answers them, writes the bytes where they belong (`pwrite`)
//! and, when its last connection is gone, renames `NAME.part` to `NAME` — or
//! leaves a resumable `.part` (one connection), or removes it (a parallel
//! download's `.part` has holes).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::body::Coding;
use super::{finish, local, raw, side, start_part, Opts};
use crate::client::{Fail, Head};
use crate::progress::{human, Progress};
use crate::target::Target;

/// Below this size a file is fetched on one connection even with `-j`.
const MIN_PARALLEL: u64 = 1024 * 1024;
/// What `NAME.part.meta` holds for a parallel download: its `.part` has holes
/// and cannot be resumed as a prefix.
const PARALLEL_META: &str = "#iocomp-parallel";

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
    /// Receive the body and write it from `at`; `len` overrides the framing.
    Body {
        at: u64,
        coding: Option<Coding>,
        len: Option<u64>,
    },
    /// Close it: its part is done (a probe that started the ranges, a 416
    /// saying the partial file is whole).
    Close,
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
    /// `If-Range` of a resume, else `None`.
    validator: Option<String>,
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
            validator: None,
            got: 0,
            result: None,
        };
        if job.out.exists() && !opts.force {
            job.failed = Some(Fail::Local(format!(
                "{} exists; use --force to overwrite it",
                job.out.display()
            )));
            return job;
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
                match &job.validator {
                    Some(v) => extra.push(("If-Range", v.clone())),
                    None => job
                        .progress
                        .note("no validator saved with the partial file: resuming unchecked"),
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

    /// The length of a resumable `NAME.part` (and its validator), or 0.
    fn resume_point(&mut self) -> u64 {
        let Ok(m) = fs::metadata(&self.part) else {
            return 0;
        };
        let v = fs::read_to_string(&self.meta)
            .ok()
            .filter(|v| !v.is_empty());
        if v.as_deref() == Some(PARALLEL_META) {
            self.progress.note(
                "the partial file is from a parallel download (-j), which leaves holes: downloading afresh",
            );
            return 0;
        }
        self.validator = v;
        m.len()
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
                len: opts.size,
            }),
            Role::Main { offset } => match head.status {
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
                    match head.content_range() {
                        Some((a, _, _)) if a == offset => {}
                        _ => {
                            return Err(Fail::Network(format!(
                                "the server resumed at another offset than {offset}"
                            )))
                        }
                    }
                    let coding = super::content_coding(head, opts)?;
                    self.progress
                        .note(&format!("resuming at {}", human(offset as f64)));
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&self.part)
                        .map_err(|e| local(&self.part, e))?;
                    self.file = Some(f);
                    let total = head.content_length().map(|n| n + offset);
                    self.progress.start(total, offset);
                    Ok(Next::Body {
                        at: offset,
                        coding,
                        len: None,
                    })
                }
                416 if offset > 0 && head.unsatisfied_total() == Some(offset) => {
                    // The partial file is already whole.
                    self.left = 0;
                    Ok(Next::Close)
                }
                _ => Err(status_error()),
            },
            Role::Probe => match (head.status, head.content_range()) {
                (206, Some((0, 0, Some(total)))) if total >= MIN_PARALLEL => {
                    super::content_coding(head, opts)?;
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
                let got = head.content_range().map(|(a, b, _)| (a, b));
                if head.status != 206 || got != Some((first, last)) {
                    return Err(Fail::Network(format!(
                        "range {first}-{last} answered {} {} (the file changed meanwhile?)",
                        head.status, head.reason
                    )));
                }
                super::content_coding(head, opts)?;
                Ok(Next::Body {
                    at: first,
                    coding: None,
                    len: Some(last - first + 1),
                })
            }
        }
    }

    /// A 200: the whole file into a fresh `.part`.
    fn whole(&mut self, head: &Head, opts: &Opts) -> Result<Next, Fail> {
        let coding = super::content_coding(head, opts)?;
        self.file = Some(start_part(&self.part, &self.meta, head.validator())?);
        // A compressed body's length on the wire is not the file's: no total.
        let total = if coding.is_some() {
            None
        } else {
            super::body::Framing::of(head).len_hint()
        };
        self.progress.start(total, 0);
        Ok(Next::Body {
            at: 0,
            coding,
            len: None,
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
        let file = start_part(&self.part, &self.meta, Some(PARALLEL_META.into()))?;
        file.set_len(total).map_err(|e| local(&self.part, e))?;
        self.file = Some(file);
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
        self.file = Some(start_part(&self.part, &self.meta, None)?);
        self.progress.start(opts.size, 0);
        Ok(())
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
        if self.failed.is_none() && self.left > 0 {
            self.failed = Some(Fail::Network("the download stopped unfinished".into()));
        }
        if self.failed.is_none() && self.target.raw {
            if let Err(e) = raw::check(&self.part, self.got, opts.size) {
                self.failed = Some(e);
            }
        }
        match self.failed.take() {
            Some(e) => {
                if self.sparse {
                    // A file with holes must never be resumed as if it were a prefix.
                    let _ = fs::remove_file(&self.part);
                    let _ = fs::remove_file(&self.meta);
                }
                Err(e)
            }
            None => finish(&self.part, &self.meta, &self.out),
        }
    }
}
