//! The custom-provider example passes the conformance suite and deploys, reverts and
//! rolls back on its toy platform, behind the real proxy, and leaves no instance
//! running.

#[path = "../examples/custom_provider.rs"]
mod example;

use bluegreen_testkit::scratch::Scratch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_provider_example_conforms_and_deploys() {
    let scratch = Scratch::new("toy");
    let said = example::run(scratch.path()).await;
    // whatever happened, no instance of the toy platform may outlive the test
    let left = example::processes(scratch.path());
    let stray: Vec<u32> = left.iter().map(|p| p.pid).collect();
    for p in &left {
        let pid = rustix::process::Pid::from_raw(p.pid as i32).expect("a pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let said = said.expect("the example runs");
    assert!(stray.is_empty(), "instances left running: {left:?}");
    assert_eq!(said.len(), 5, "{said:?}");
    assert!(
        said[0].starts_with("the toy provider passes the conformance suite ("),
        "{}",
        said[0]
    );
    assert_eq!(said[1], "deployed web-toy-v001 then web-toy-v002");
    assert!(said[2].contains("(reverted)"), "{}", said[2]);
    assert_eq!(said[3], "rolled back from web-toy-v002 to web-toy-v001");
    assert_eq!(said[4], "cleaned up: 0 instances left");
}
