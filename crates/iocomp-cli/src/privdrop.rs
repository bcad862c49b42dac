//! `--user NAME` / `--group NAME`: a server started as root gives root up
//! after it has bound its sockets and opened its access log, before any
//! thread starts: `initgroups`, `setgid`, `setuid`, in that order, then a
//! check that root cannot be had back. Every libc call of the switch is here.

use std::ffi::{CStr, CString};
use std::io;

/// Whom to become.
pub(crate) struct Identity {
    name: CString,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
}

/// The buffer size `getpwnam_r`/`getgrnam_r` start with (doubled on ERANGE).
const FIRST_BUF: usize = 4096;
const MAX_BUF: usize = 1 << 20;

/// Looks `user` (and `group`, else the user's primary group) up. Refuses when
/// the process is not root: only root can switch, and a server that is not
/// root has nothing to give up.
pub(crate) fn lookup(user: &str, group: Option<&str>) -> Result<Identity, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "--user {user}: only root can switch users (running as uid {euid}); start as root or leave --user out"
        ));
    }
    let name = CString::new(user).map_err(|_| format!("--user {user:?}: NUL in the name"))?;
    let (uid, primary) = passwd(&name)
        .map_err(|e| format!("--user {user}: cannot look the user up: {e}"))?
        .ok_or_else(|| format!("--user {user}: no such user"))?;
    let gid = match group {
        None => primary,
        Some(g) => {
            let gname = CString::new(g).map_err(|_| format!("--group {g:?}: NUL in the name"))?;
            group_id(&gname)
                .map_err(|e| format!("--group {g}: cannot look the group up: {e}"))?
                .ok_or_else(|| format!("--group {g}: no such group"))?
        }
    };
    Ok(Identity { name, uid, gid })
}

fn passwd(name: &CStr) -> io::Result<Option<(libc::uid_t, libc::gid_t)>> {
    let mut size = FIRST_BUF;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: all-zero bytes are a valid `passwd` (null pointers, zeros).
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; `pw`, `buf` (of the length
        // passed) and `found` are live and writable for the call; the strings
        // it stores point into `buf`, which we do not read.
        let rc =
            unsafe { libc::getpwnam_r(name.as_ptr(), &mut pw, buf.as_mut_ptr(), size, &mut found) };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some((pw.pw_uid, pw.pw_gid))),
            libc::ERANGE if size < MAX_BUF => size *= 2,
            // Some NSS modules report "no such user" as an error number.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn group_id(name: &CStr) -> io::Result<Option<libc::gid_t>> {
    let mut size = FIRST_BUF;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: all-zero bytes are a valid `group` (null pointers, zeros).
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `passwd`: NUL-terminated name, live writable outputs,
        // `buf` of the length passed.
        let rc =
            unsafe { libc::getgrnam_r(name.as_ptr(), &mut gr, buf.as_mut_ptr(), size, &mut found) };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(gr.gr_gid)),
            libc::ERANGE if size < MAX_BUF => size *= 2,
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn check(what: &str, rc: libc::c_int) -> Result<(), String> {
    if rc != 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Becomes `id` for good: supplementary groups, group, then user (the other
/// order would leave root's groups behind, or lose the right to change them),
/// and verifies that every id changed and that `setuid(0)` now fails. Call it
/// while the process has one thread.
pub(crate) fn switch(id: &Identity) -> Result<(), String> {
    // SAFETY: `id.name` is NUL-terminated and outlives the call; initgroups
    // reads the group database and sets this process's supplementary groups.
    check("initgroups", unsafe {
        libc::initgroups(id.name.as_ptr(), id.gid)
    })?;
    // SAFETY: plain integer argument; changes this process's group ids.
    check("setgid", unsafe { libc::setgid(id.gid) })?;
    // SAFETY: plain integer argument; changes this process's user ids (real,
    // effective and saved, since the caller is root).
    check("setuid", unsafe { libc::setuid(id.uid) })?;
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: getres[ug]id write three live integers each.
    check("getresuid", unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid)
    })?;
    // SAFETY: as above.
    check("getresgid", unsafe {
        libc::getresgid(&mut rgid, &mut egid, &mut sgid)
    })?;
    if [ruid, euid, suid] != [id.uid; 3] || [rgid, egid, sgid] != [id.gid; 3] {
        return Err(format!(
            "ids after the switch are uid {ruid}/{euid}/{suid} gid {rgid}/{egid}/{sgid}, not {}/{}",
            id.uid, id.gid
        ));
    }
    // SAFETY: plain integer argument; it must fail now, and if it does not,
    // we report it and the caller exits.
    if id.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err("root could be regained after the switch".into());
    }
    Ok(())
}
