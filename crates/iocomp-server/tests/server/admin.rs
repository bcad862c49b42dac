//! The metrics listener: it may be passed already bound (the CLI binds it
//! before dropping root, so a privileged port works with `--user`), and then
//! serves exactly as one bound by address.

use std::sync::Arc;

use crate::harness::{Running, Tree};

#[test]
fn a_metrics_listener_bound_beforehand_is_served() {
    let t = Tree::new("admin");
    t.file("a.txt", b"abc");
    let l = iocomp_server::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let srv = t.serve(|c| c.metrics_listener = Some(Arc::new(l)));
    assert_eq!(srv.metrics_addr(), addr);
    assert_eq!(srv.get("/a.txt", &[]).body, b"abc");
    let admin = Running::at(addr);
    let m = admin.get("/metrics", &[]);
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.contains("iocomp_requests_total"), "{text}");
    assert_eq!(admin.get("/status.json", &[]).status, 200);
}
