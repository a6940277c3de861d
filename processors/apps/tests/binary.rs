//! The `pickple-processor` binary itself, as a child process: flags and `PICKPLE_*` environment,
//! JSON logs, dead letters, and the MASTER bootstrap of the users app.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use pickple_schemas::{Role, StockCommand, UserCommand, VendorCommand};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(p: &Pipeline, app: &str, state: &std::path::Path) -> Kill {
    let child = Command::new(env!("CARGO_BIN_EXE_pickple-processor"))
        .args(["--app", app, "--brokers", &brokers()])
        .args(["--topic-prefix", &p.prefix])
        .arg("--state-dir")
        .arg(state)
        .args([
            "--commit-interval-ms",
            "50",
            "--punctuate-interval-ms",
            "200",
        ])
        .env("PICKPLE_MASTER_USERNAME", "root")
        .env("PICKPLE_MASTER_EMAIL", "root@pickple.local")
        .env(
            "PICKPLE_MASTER_PASSWORD_HASH",
            "$argon2id$v=19$m=19456,t=2,p=1$x$y",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start pickple-processor");
    Kill(child)
}

fn sigterm(mut k: Kill) {
    let pid = k.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = k.0.wait().unwrap();
    assert!(status.success(), "exited with {status} after SIGTERM");
}

#[test]
fn binary_runs_stock_and_users_apps() {
    // No in-process apps: the pipeline only creates the topics and watches them.
    let p = Pipeline::start("bin", &config(300_000), &[]).unwrap();
    let state = tempfile::tempdir().unwrap();
    let stock = start(&p, "stock", state.path());
    let users = start(&p, "users", state.path());
    let catalog = start(&p, "catalog", state.path());

    p.send_raw("stock-commands", "p1", b"{not json");
    p.send(
        "stock-commands",
        "p1",
        &StockCommand::CreateProduct {
            product_id: "p1".into(),
            vendor_id: "v1".into(),
            name: "Mug".into(),
            description: "a mug".into(),
            price: 900,
            image_url: None,
            public: true,
        },
        None,
    );
    p.flush();
    p.wait_for(60, "product view", |s| {
        s.get("view-products", "p1")
            .is_some_and(|v| v["version"] == 1)
    });
    p.wait_for(60, "dead letter", |s| s.records("stock-dlq").len() == 1);
    p.wait_for(60, "MASTER bootstrapped", |s| {
        s.get("view-users", "root")
            .is_some_and(|v| v["role"] == "MASTER" && v["status"] == "ACTIVE")
    });
    // The e-mail registry round trip over Kafka: a sign-up mails its code (user-events), the
    // code comes back, the first claim wins, the second is refused.
    for (user, email) in [("ann1", "Ann@Mail.test"), ("bob1", "ann@mail.test")] {
        let code = format!("c0de{user}");
        p.send(
            "user-commands",
            user,
            &UserCommand::SignUp {
                user_id: format!("id-{user}"),
                username: user.into(),
                nickname: user.into(),
                email: email.into(),
                password_hash: "$argon2id$h".into(),
                role: Role::User,
                confirmation_code: code.clone(),
            },
            None,
        );
        p.flush();
        p.wait_for(60, &format!("{user}'s code to mail"), |s| {
            s.records("user-events").iter().any(|(key, v)| {
                key == user
                    && v["type"] == "ConfirmationRequested"
                    && v["code"] == code.as_str()
                    && v["email"] == "ann@mail.test"
            })
        });
        assert_eq!(
            p.view("view-users", user).unwrap()["status"],
            "PENDING",
            "nothing is claimed before the code comes back"
        );
        p.send(
            "user-commands",
            user,
            &UserCommand::ConfirmEmail {
                username: user.into(),
                code,
            },
            None,
        );
        p.flush();
        p.wait_for(60, &format!("{user} answered"), |s| {
            s.get("view-users", user)
                .is_some_and(|v| v["status"] != "PENDING")
        });
    }
    assert_eq!(p.view("view-users", "ann1").unwrap()["status"], "ACTIVE");
    let bob = p.view("view-users", "bob1").unwrap();
    assert_eq!(bob["status"], "REJECTED");
    assert_eq!(bob["rejection"], "e-mail already in use");

    p.send(
        "vendor-commands",
        "v1",
        &VendorCommand::CreateVendor {
            vendor_id: "v1".into(),
            name: "Mugs & Co".into(),
            manager: "ann1".into(),
        },
        None,
    );
    p.flush();
    p.wait_for(60, "vendor view", |s| {
        s.get("view-vendors", "v1")
            .is_some_and(|v| v["manager"] == "ann1")
    });

    sigterm(catalog);
    sigterm(stock);
    sigterm(users);
    p.stop();
}
