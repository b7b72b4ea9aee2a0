//! The state file: a restored proxy serves the same tables at once; a file that
//! does not read is refused at start, naming the file.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bluegreen_core::{ErrorKind, GroupId, RouteTable};
use bluegreen_proxy::{BackendSpec, Proxy};
use bluegreen_testkit::scratch::Scratch;
use support::{get, http1_client, test_options, TestBackend};

fn scratch(name: &str) -> Scratch {
    Scratch::new(&format!("proxy-state-{name}"))
}

/// Serves `proxy` on a loopback port until the returned sender is dropped.
async fn serve(proxy: &Proxy) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let p = proxy.clone();
    tokio::spawn(async move {
        p.serve(listener, None, async move {
            let _ = rx.await;
        })
        .await
    });
    (addr, tx)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_restored_proxy_serves_the_same_tables_at_once() {
    let dir = scratch("restore");
    let file = dir.join("state.json");
    let blue = TestBackend::start("blue", "i0").await;
    let green = TestBackend::start("green", "i0").await;
    let (b, g) = (
        GroupId::from("web-prod-v001"),
        GroupId::from("web-prod-v002"),
    );
    {
        let proxy = Proxy::restore(test_options().with_state_file(&file))
            .await
            .unwrap();
        assert!(
            file.is_file(),
            "a missing file is an empty state, written at once"
        );
        proxy
            .attach(
                "web.prod",
                &b,
                &[BackendSpec::new(blue.addr.to_string()).with_instance("i0")],
            )
            .await
            .unwrap();
        proxy
            .attach("web.prod", &g, &[BackendSpec::new(green.addr.to_string())])
            .await
            .unwrap();
        proxy
            .set_routes("web.prod", &RouteTable::single(g.clone()))
            .unwrap();
        let mut groups = BTreeMap::new();
        groups.insert(
            GroupId::from("api-prod-v001"),
            vec![BackendSpec::new(blue.addr.to_string())],
        );
        proxy
            .apply(
                "api.prod",
                &RouteTable::single(GroupId::from("api-prod-v001")),
                &groups,
            )
            .await
            .unwrap();
        proxy.pause("api.prod").unwrap();
        proxy.set_default_app("api.prod").unwrap();
        assert_eq!(mode(&file), 0o600, "only the owner reads the state file");
    }
    // a proxy made with `new` neither reads nor writes it
    let plain = Proxy::new(test_options().with_state_file(&file));
    assert!(plain.routes("web.prod").unwrap().is_empty());
    plain
        .set_routes("other.prod", &RouteTable::empty())
        .unwrap();

    let proxy = Proxy::restore(test_options().with_state_file(&file))
        .await
        .unwrap();
    assert_eq!(
        proxy.routes("web.prod").unwrap(),
        RouteTable::single(g.clone())
    );
    assert_eq!(
        proxy.routes("api.prod").unwrap(),
        RouteTable::single(GroupId::from("api-prod-v001"))
    );
    assert!(proxy.report("other.prod").unwrap().is_none());
    let web = proxy.report("web.prod").unwrap().unwrap();
    assert_eq!(
        web.groups.len(),
        2,
        "the group without traffic is kept attached"
    );
    assert_eq!(web.groups[0].backends[0].instance.as_deref(), Some("i0"));
    let api = proxy.report("api.prod").unwrap().unwrap();
    assert!(api.paused && api.default, "{api:?}");
    // serving at once: the first request after the restart is answered by green
    let (addr, _stop) = serve(&proxy).await;
    let client = http1_client();
    let (status, _, body) = get(&client, &format!("http://{addr}/"), "web.prod", &[])
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "green i0"));
    // and the file follows every change
    proxy.resume("api.prod").unwrap();
    proxy
        .set_routes("web.prod", &RouteTable::single(b.clone()))
        .unwrap();
    proxy.detach("web.prod", &g).unwrap();
    let again = Proxy::restore(test_options().with_state_file(&file))
        .await
        .unwrap();
    assert_eq!(again.routes("web.prod").unwrap(), RouteTable::single(b));
    assert_eq!(again.report("web.prod").unwrap().unwrap().groups.len(), 1);
    assert!(!again.report("api.prod").unwrap().unwrap().paused);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );
    drop(dir);
}

#[tokio::test]
async fn a_state_file_that_does_not_read_is_refused_naming_it() {
    let dir = scratch("corrupt");
    let file = dir.join("state.json");
    for (content, says) in [
        ("{\"version\": 1, \"apps\": [", "does not read"),
        ("not json", "does not read"),
        ("{\"version\": 1, \"apps\": [], \"extra\": 1}", "extra"),
        (
            "{\"version\": 1, \"apps\": [{\"host\": \"web.prod\", \"routes\": {\"g\": 120}, \"groups\": {}}]}",
            "apps[0].routes",
        ),
        (
            "{\"version\": 1, \"apps\": [{\"host\": \"web.prod\", \"routes\": {\"g\": 100}, \"groups\": {}}]}",
            "web.prod",
        ),
        ("{\"version\": 9, \"apps\": []}", "version 9"),
    ] {
        std::fs::write(&file, content).unwrap();
        let e = Proxy::restore(test_options().with_state_file(&file))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{content}: {e}");
        let text = e.to_string();
        assert!(text.contains(file.to_str().unwrap()), "{content}: names the file: {text}");
        assert!(text.contains(says), "{content}: {text}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            content,
            "a refused file is left as it was"
        );
    }
    let e = Proxy::restore(test_options()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("state_file"), "{e}");
    drop(dir);
}

/// The binary refuses to start on a corrupt state file, and on a token file that
/// others may read, each time naming the file.
#[test]
fn the_binary_refuses_a_corrupt_state_file_and_a_shared_token_file() {
    let dir = scratch("binary");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token-123\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = dir.join("state.json");
    std::fs::write(&state, "{\"version\": 1, \"apps\": [ oops").unwrap();
    let run = |token: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bluegreen-proxy"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--admin-token-file")
            .arg(token)
            .arg("--state-file")
            .arg(&state)
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let out = run(&token);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(state.to_str().unwrap()), "{stderr}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&token);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(token.to_str().unwrap())
            && stderr.contains("readable by its group or others"),
        "{stderr}"
    );
    drop(dir);
}
