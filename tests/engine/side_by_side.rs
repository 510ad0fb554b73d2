//! Two copies of one stack at once, as parallel CI jobs run them.

use crate::support::*;

#[test]
fn two_copies_run_side_by_side_and_go_down_separately() {
    let a = Project::new("a", "pair.yaml");
    let b = Project::new("b", "pair.yaml");
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.run(&["up", "--wait"]));
        let hb = s.spawn(|| b.run(&["up", "--wait"]));
        (ha.join().expect("a"), hb.join().expect("b"))
    });
    assert!(ra.status.success(), "{}", stderr(&ra));
    assert!(rb.status.success(), "{}", stderr(&rb));
    let (pa, pb) = (a.published("app", 8080), b.published("app", 8080));
    assert_ne!(pa, pb);
    assert!(http_get(&pa, "/").contains(&format!("{}-app-1", a.name)));
    assert!(http_get(&pb, "/").contains(&format!("{}-app-1", b.name)));

    a.ok(&["down", "--volumes"]);
    assert!(a.containers().is_empty());
    assert_eq!(b.containers().len(), 2, "b must be untouched by a's down");
    http_get(&pb, "/health");
}
