//! `--user NAME` / `--group NAME`: a server started as root gives root up
//! after it has bound its sockets and opened its access log, before any
//! thread starts: `initgroups`, `setgid`, `setuid`, in that order, then a
//! check that root cannot be had back. The libc calls are in [`crate::sys`].

use std::ffi::CString;

use crate::sys;

/// Whom to become.
pub(crate) struct Identity {
    name: CString,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
}

/// Looks `user` (and `group`, else the user's primary group) up. Refuses when
/// the process is not root: only root can switch, and a server that is not
/// root has nothing to give up.
pub(crate) fn lookup(user: &str, group: Option<&str>) -> Result<Identity, String> {
    let euid = sys::geteuid();
    if euid != 0 {
        return Err(format!(
            "--user {user}: only root can switch users (running as uid {euid}); start as root or leave --user out"
        ));
    }
    let name = CString::new(user).map_err(|_| format!("--user {user:?}: NUL in the name"))?;
    let (uid, primary) = sys::passwd_ids(&name)
        .map_err(|e| format!("--user {user}: cannot look the user up: {e}"))?
        .ok_or_else(|| format!("--user {user}: no such user"))?;
    let gid = match group {
        None => primary,
        Some(g) => {
            let gname = CString::new(g).map_err(|_| format!("--group {g:?}: NUL in the name"))?;
            sys::group_id(&gname)
                .map_err(|e| format!("--group {g}: cannot look the group up: {e}"))?
                .ok_or_else(|| format!("--group {g}: no such group"))?
        }
    };
    Ok(Identity { name, uid, gid })
}

fn check(what: &str, r: std::io::Result<()>) -> Result<(), String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Becomes `id` for good: supplementary groups, group, then user (the other
/// order would leave root's groups behind, or lose the right to change them),
/// and verifies that every id changed and that `setuid(0)` now fails. Call it
/// while the process has one thread.
pub(crate) fn switch(id: &Identity) -> Result<(), String> {
    check("initgroups", sys::initgroups(&id.name, id.gid))?;
    check("setgid", sys::setgid(id.gid))?;
    check("setuid", sys::setuid(id.uid))?;
    let [ruid, euid, suid] = sys::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let [rgid, egid, sgid] = sys::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    if [ruid, euid, suid] != [id.uid; 3] || [rgid, egid, sgid] != [id.gid; 3] {
        return Err(format!(
            "ids after the switch are uid {ruid}/{euid}/{suid} gid {rgid}/{egid}/{sgid}, not {}/{}",
            id.uid, id.gid
        ));
    }
    // It must fail now; if it does not, we report it and the caller exits.
    if id.uid != 0 && sys::setuid(0).is_ok() {
        return Err("root could be regained after the switch".into());
    }
    Ok(())
}
