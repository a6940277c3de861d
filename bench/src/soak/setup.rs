//! Setup through the API, each step waited for until visible (long-poll) before it is used:
//! the MASTER signs in; vendor managers sign up as USERs and the MASTER makes them
//! VENDOR_MANAGERs; each creates a vendor and its products and sets their stock; one product
//! gets a flash sale that opens a few seconds after setup; the buyers sign up. Every sign-up
//! confirms its address with the code mailed to it ([`Api::sign_up_and_in`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::{Api, Session};
use crate::cli::Cli;
use crate::ctx::Manager;
use crate::ledger::{Ledger, ProductRec, SaleRec};

pub struct World {
    pub master: Arc<Session>,
    pub managers: Vec<Manager>,
    pub products: Vec<String>,
    pub flash_product: Option<String>,
    /// When the flash sale opens (ms since the epoch).
    pub flash_opens_at: Option<i64>,
    pub buyers: Vec<Arc<Session>>,
    pub flash_buyers: Vec<Arc<Session>>,
}

/// Concurrent setup requests.
const PARALLEL: usize = 6;

pub fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn setup(
    cli: &Cli,
    api: &Api,
    ledger: &Ledger,
    run: &str,
    password: &str,
    rng: &mut StdRng,
) -> anyhow::Result<World> {
    api.get("/health", None)
        .await
        .map_err(|e| anyhow!("the gateway at {} does not answer: {e}", api.base()))?;
    let master_password = cli.master_password()?;
    let master = api
        .sign_in(&cli.master_user, &master_password)
        .await
        .map_err(|e| {
            anyhow!(
                "cannot sign in as the MASTER '{}': {e}\n  the stack must run with a MASTER account \
                 (PICKPLE_MASTER_USERNAME/EMAIL/PASSWORD_HASH on the users processor; \
                 scripts/up.sh sets it up and writes {}/master.password)",
                cli.master_user,
                cli.work.display()
            )
        })?;
    let r = api
        .get("/users?limit=1", Some(&*master))
        .await
        .map_err(|e| anyhow!(e))?;
    if r.status != 200 {
        bail!(
            "'{}' signed in but is not MASTER (GET /users answered {})",
            cli.master_user,
            r.describe()
        );
    }
    eprintln!("setup: signed in as MASTER '{}'", cli.master_user);

    // Vendor managers and their vendors.
    let managers: Vec<Result<Manager, String>> = stream::iter(0..cli.vendors)
        .map(|i| {
            let master = master.clone();
            async move { manager(api, &master, ledger, run, password, i).await }
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    let managers = managers
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("vendor manager setup: {e}"))?;
    if managers.is_empty() {
        bail!("--vendors must be at least 1");
    }
    eprintln!(
        "setup: {} vendor managers with a vendor each",
        managers.len()
    );

    // Products with stock.
    let mut specs = Vec::new();
    for (m, _) in managers.iter().enumerate() {
        for j in 0..cli.products_per_vendor {
            specs.push((m, j, rng.random_range(10i64..500) * 100));
        }
    }
    let products: Vec<Result<ProductRec, String>> = stream::iter(specs)
        .map(|(m, j, price)| {
            let mgr = &managers[m];
            async move {
                let name = format!("Soak {run} product {m}-{j}");
                let key = format!("{run}-product-{m}-{j}");
                let id =
                    create_product(api, &mgr.session, &mgr.vendor_id, &name, price, &key).await?;
                set_stock(api, &mgr.session, &id, cli.initial_stock).await?;
                Ok(ProductRec {
                    product_id: id,
                    manager: m,
                    initial: cli.initial_stock,
                    ..Default::default()
                })
            }
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    let products = products
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("product setup: {e}"))?;
    if products.is_empty() {
        bail!("--products-per-vendor must be at least 1");
    }
    let product_ids: Vec<String> = products.iter().map(|p| p.product_id.clone()).collect();
    ledger.products.lock().unwrap().extend(products);
    eprintln!(
        "setup: {} products with {} units each",
        product_ids.len(),
        cli.initial_stock
    );

    // The flash-sale product (its sale opens at the end of setup).
    let flash = if cli.flash_buyers > 0 {
        let mgr = &managers[0];
        let id = create_product(
            api,
            &mgr.session,
            &mgr.vendor_id,
            &format!("Soak {run} flash sneaker"),
            9_900,
            &format!("{run}-flash"),
        )
        .await
        .map_err(|e| anyhow!("flash product: {e}"))?;
        let stock = cli.flash_quantity + (cli.flash_quantity / 2).max(10);
        set_stock(api, &mgr.session, &id, stock)
            .await
            .map_err(|e| anyhow!("flash product stock: {e}"))?;
        ledger.products.lock().unwrap().push(ProductRec {
            product_id: id.clone(),
            manager: 0,
            initial: stock,
            ..Default::default()
        });
        Some(id)
    } else {
        None
    };

    // Buyers.
    let buyers = sign_up_many(api, ledger, run, "b", cli.buyers, password)
        .await
        .context("buyers")?;
    let flash_buyers = sign_up_many(api, ledger, run, "f", cli.flash_buyers, password)
        .await
        .context("flash buyers")?;
    {
        let mut users = ledger.users.lock().unwrap();
        users.extend(buyers.iter().map(|s| s.username.clone()));
        users.extend(flash_buyers.iter().map(|s| s.username.clone()));
    }
    eprintln!(
        "setup: {} buyers and {} flash buyers signed up",
        buyers.len(),
        flash_buyers.len()
    );

    let mut flash_opens_at = None;
    if let Some(id) = &flash {
        let opens_at = epoch_ms() + cli.flash_open_delay as i64 * 1000;
        let sale = SaleRec {
            opens_at,
            closes_at: opens_at + (cli.duration as i64 + 3600) * 1000,
            quantity: cli.flash_quantity,
            per_user_limit: cli.flash_limit.clamp(1, cli.flash_quantity.max(1)),
        };
        open_sale(api, &managers[0].session, id, sale)
            .await
            .map_err(|e| anyhow!("flash sale: {e}"))?;
        if let Some(p) = ledger
            .products
            .lock()
            .unwrap()
            .iter_mut()
            .find(|p| &p.product_id == id)
        {
            p.sale = Some(sale);
        }
        flash_opens_at = Some(opens_at);
        eprintln!(
            "setup: flash sale of {} units (limit {} per user) opens in {} s",
            sale.quantity, sale.per_user_limit, cli.flash_open_delay
        );
    }

    Ok(World {
        master,
        managers,
        products: product_ids,
        flash_product: flash,
        flash_opens_at,
        buyers,
        flash_buyers,
    })
}

async fn manager(
    api: &Api,
    master: &Session,
    ledger: &Ledger,
    run: &str,
    password: &str,
    i: usize,
) -> Result<Manager, String> {
    let username = format!("{run}m{i}");
    api.sign_up_and_in(&username, password, ledger).await?;
    let r = api
        .call(
            Method::PUT,
            &format!("/users/{username}/role"),
            Some(master),
            Some(&json!({"role": "VENDOR_MANAGER"})),
            None,
        )
        .await?;
    if r.status != 202 {
        return Err(format!("role change of {username}: {}", r.describe()));
    }
    api.follow(&format!("/users/{username}"), Some(master), |v| {
        v["role"] == "VENDOR_MANAGER"
    })
    .await?;
    // A token carries the role it was issued with: sign in again.
    let session = api.sign_in(&username, password).await?;
    let r = api
        .call(
            Method::POST,
            "/vendors",
            Some(&*session),
            Some(&json!({"name": format!("Soak {run} vendor {i}")})),
            Some(&format!("{run}-vendor-{i}")),
        )
        .await?;
    if r.status != 202 {
        return Err(format!("vendor of {username}: {}", r.describe()));
    }
    let vendor_id = accepted_id(&r.body)?;
    api.wait_exists(&format!("/vendors/{vendor_id}"), Some(&*session))
        .await?;
    Ok(Manager { session, vendor_id })
}

pub fn accepted_id(body: &Value) -> Result<String, String> {
    body["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no id in {body}"))
}

async fn create_product(
    api: &Api,
    s: &Session,
    vendor_id: &str,
    name: &str,
    price: i64,
    key: &str,
) -> Result<String, String> {
    let body = json!({
        "vendor_id": vendor_id, "name": name, "description": "made by pickple-soak",
        "price": price, "public": true,
    });
    let r = api
        .call(Method::POST, "/products", Some(s), Some(&body), Some(key))
        .await?;
    if r.status != 202 {
        return Err(format!("product {name}: {}", r.describe()));
    }
    let id = accepted_id(&r.body)?;
    api.wait_exists(&format!("/products/{id}"), Some(s)).await?;
    Ok(id)
}

/// PUT the stock of a product nobody orders yet, and wait until the view shows it.
async fn set_stock(api: &Api, s: &Session, id: &str, quantity: u64) -> Result<(), String> {
    let r = api
        .call(
            Method::PUT,
            &format!("/products/{id}/stock"),
            Some(s),
            Some(&json!({"quantity": quantity})),
            None,
        )
        .await?;
    if r.status != 202 {
        return Err(format!("stock of {id}: {}", r.describe()));
    }
    api.follow(&format!("/products/{id}"), Some(s), |v| {
        v["stock"]["available"].as_u64() == Some(quantity)
    })
    .await?;
    Ok(())
}

async fn open_sale(api: &Api, s: &Session, id: &str, sale: SaleRec) -> Result<(), String> {
    let body = json!({
        "opens_at": sale.opens_at, "closes_at": sale.closes_at,
        "quantity": sale.quantity, "per_user_limit": sale.per_user_limit,
    });
    let r = api
        .call(
            Method::POST,
            &format!("/products/{id}/sale"),
            Some(s),
            Some(&body),
            None,
        )
        .await?;
    if r.status != 202 {
        return Err(format!("sale on {id}: {}", r.describe()));
    }
    api.follow(&format!("/products/{id}"), Some(s), |v| {
        v["sale"]["terms"]["opens_at"].as_i64() == Some(sale.opens_at)
    })
    .await?;
    Ok(())
}

async fn sign_up_many(
    api: &Api,
    ledger: &Ledger,
    run: &str,
    kind: &str,
    n: usize,
    password: &str,
) -> anyhow::Result<Vec<Arc<Session>>> {
    let out: Vec<Result<Arc<Session>, String>> = stream::iter(0..n)
        .map(|i| async move {
            api.sign_up_and_in(&format!("{run}{kind}{i}"), password, ledger)
                .await
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    out.into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!(e))
}
