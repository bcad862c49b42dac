//! Win32 kernel-object waits (work in progress).
