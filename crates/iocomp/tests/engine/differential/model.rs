//! The reference model's rules, written from the documentation.

use super::*;

impl Kind {
    /// Completes by itself (given a reader that drains every socket).
    pub(super) fn finite(self) -> bool {
        match self {
            Kind::Timeout { long, .. } => !long,
            Kind::Send { .. } | Kind::Transmit { .. } | Kind::Connect { .. } => true,
            Kind::Recv { .. } | Kind::Accept => false,
        }
    }
}

impl Model {
    pub(super) fn describe(&self, i: usize) -> String {
        let o = &self.ops[i];
        format!(
            "op #{i} (step {}, {:?}, id {:?}, thread {}, disturbed {})",
            o.at, o.kind, o.id, o.owner, o.disturbed
        )
    }

    pub(super) fn outstanding(&self) -> impl Iterator<Item = usize> + '_ {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.id.is_some() && o.got.is_none())
            .map(|(i, _)| i)
    }
}

pub(super) fn errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("os {n}"),
        None => format!("{:?}", e.kind()),
    }
}

pub(super) fn the_file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    // Always the same bytes: written under a name of this process's own and
    // renamed into place, so that runs in parallel never see it half written.
    PATH.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("differential-transmit.bin");
        let tmp = dir.join(format!("differential-transmit.{}", std::process::id()));
        let mut f = File::create(&tmp).unwrap();
        f.write_all(&pattern(FILE_SEED, 0, FILE_LEN as usize))
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
}

pub(super) fn classify(o: &OpRec) -> (String, Option<String>) {
    let accepted = match o.refused {
        Some(k) => format!("refused {k:?}"),
        None => "accepted".to_string(),
    };
    let Some(g) = &o.got else {
        return (accepted, None);
    };
    let exact = match o.kind {
        Kind::Timeout { long: true, .. } if g.aborted => Some("ECANCELED".to_string()),
        Kind::Timeout { long: true, .. } => Some(format!("{:?} {}", g.status, g.bytes)),
        Kind::Recv { .. } | Kind::Accept => None,
        _ if o.disturbed => None,
        Kind::Timeout { .. } | Kind::Send { .. } | Kind::Connect { .. } => {
            Some(format!("{:?} {}", g.status, g.bytes))
        }
        Kind::Transmit { .. } => Some(format!("{:?} {}", g.status.is_ok(), g.bytes)),
    };
    (accepted, exact)
}
