//! The custom-provider example passes the conformance suite and deploys, reverts and
//! rolls back on its toy platform, behind the real proxy.

#[path = "../examples/custom_provider.rs"]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_provider_example_conforms_and_deploys() {
    let said = example::run().await.expect("the example runs");
    assert_eq!(said.len(), 4, "{said:?}");
    assert_eq!(said[0], "the toy provider passes the conformance suite");
    assert_eq!(said[1], "deployed web-toy-v001 then web-toy-v002");
    assert!(said[2].contains("(reverted)"), "{}", said[2]);
    assert_eq!(said[3], "rolled back from web-toy-v002 to web-toy-v001");
}
