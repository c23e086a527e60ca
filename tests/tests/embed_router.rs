//! An application that mounts corral's router in its own HTTP server (not `corral serve`):
//! its `App` made with `App::new` from the parts it chooses (it used to fill in every field by
//! hand, copied from `serve.rs`, and each new field broke it), its own listener, corral's
//! typed client against it.

use std::sync::Arc;

use corral_actors::{Corral, CorralConfig, SessionSpec};
use corral_client::Client;
use corral_runtime::{Supervisor, SupervisorSpec};
use corral_server::app::{App, AppParts};
use corral_server::auth::Tokens;

#[tokio::test]
async fn an_application_serves_corrals_router_itself() {
    let dir = tempfile::tempdir().unwrap();
    let corral = Corral::start(CorralConfig::default()).await.unwrap();
    let (clients, _) = Supervisor::start(SupervisorSpec::new("app-connections"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let admin = corral_server::auth::new_secret(&corral_server::auth::random_id());
    let app = Arc::new(App::new(AppParts {
        corral: corral.clone(),
        tokens: Tokens::new(admin.clone()),
        config: Default::default(),
        clients: clients.clone(),
        url: url.clone(),
        exe: corral_tests::binary(),
        hooks: corral_tests::binary(),
        data_dir: dir.path().to_path_buf(),
        listeners: (None, None),
    }));
    let router = corral_server::routes::router(app);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = Client::tcp(&url, admin).unwrap();
    let mut spec = SessionSpec::new(["sh", "-c", "echo served-by-the-app; exec sleep 60"]);
    spec.name = Some("mounted".into());
    let info = client.spawn(&spec).await.unwrap();
    assert_eq!(info.name, "mounted");
    let listed = client.sessions().await.unwrap();
    assert_eq!(listed.len(), 1);
    corral.shutdown().await.unwrap();
    clients.stop(None).await.unwrap();
    server.abort();
}
