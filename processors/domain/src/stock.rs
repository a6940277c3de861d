//! A product's catalogue entry, stock levels, reservations and sale, keyed by product id.
//!
//! The stock processor is the only writer of a product (its task owns the product id's partition
//! of `stock-commands`), so these rules run one command at a time per product: checking
//! `available >= quantity` and then reserving cannot race, which is what makes oversell
//! impossible without a lock.
//!
//! A product is stored as several entries (docs/state.md): its own value ([`ProductState`]:
//! catalogue fields, levels, sale terms and counters, a size that does not grow with orders),
//! one entry per reservation and one per buyer of the current sale. A command sees a
//! [`ProductSlice`]: the product's value plus the few entries it touches, which the app loads
//! ([`order_of`], [`ProductSlice::buyer_of`], [`ProductSlice::needs_every_buyer`]) and writes
//! back when they change.

use std::collections::BTreeMap;

use pickple_schemas::{
    Amount, Availability, Millis, OrderReply, ProductView, SaleState, SaleStatus, SaleTerms,
    StockCommand, StockLevels, VendorCommand,
};
use serde::{Deserialize, Serialize};

use crate::rules::{non_empty, positive, visible_text};
use crate::{is_false, qty_i64, Aggregate, Rejection, ViewMeta};

/// The product's own stored value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductState {
    pub product_id: String,
    pub vendor_id: String,
    pub name: String,
    pub description: String,
    pub price: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    pub public: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    pub stock: StockLevels,
    /// Only in values written before reservations had keys of their own (issue #18), where
    /// every reservation ever made lived here. Read so that [`ProductState::split_legacy`] can
    /// move them out on the first command; empty, and so never written, after that.
    #[serde(
        default,
        rename = "reservations",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub legacy_reservations: BTreeMap<String, Reservation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<Sale>,
    /// The request ids of the last [`RECENT_ADDS`] AddStock that carried one: a repeat of one
    /// of them adds nothing. A repeat comes seconds after the original (a client retrying after
    /// a gateway crash), so a short window bounds the value and still catches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_adds: Vec<String>,
    /// The epoch of the last sale deleted before it opened, so the next sale gets a new epoch
    /// and never meets counters or `view-sale-takes` records of an earlier one. 0 (and absent
    /// in values written before sales could be deleted) when none was.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_sale_epoch: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many AddStock request ids a product remembers.
pub const RECENT_ADDS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub quantity: u64,
    pub username: String,
    /// The price when the order reserved: a later price change must not alter what it pays.
    pub unit_price: Amount,
    pub status: ReservationStatus,
    /// The epoch of the sale whose counters this reservation holds. A reservation made before a
    /// sale, or under an earlier sale, must not free units of the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Reserved,
    Committed,
    Released,
    Restocked,
}

impl ReservationStatus {
    /// Whether the reservation still holds units (reserved or sold).
    pub fn holds_units(self) -> bool {
        matches!(
            self,
            ReservationStatus::Reserved | ReservationStatus::Committed
        )
    }

    /// Whether no command can move the reservation any more (released, or restocked). Such a
    /// reservation only answers duplicates: Release, Commit and Restock of it are no-ops with
    /// or without it, and it keeps a redelivered Reserve from taking the stock again. A
    /// committed reservation is not final: a Restock may come whenever the paid order is
    /// cancelled before its delivery starts.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReservationStatus::Released | ReservationStatus::Restocked
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    pub terms: SaleTerms,
    pub epoch: u32,
    /// Units reserved or sold under this sale.
    pub taken: u64,
    /// Only in values written before the buyers' counters had keys of their own (issue #18);
    /// moved out by [`ProductState::split_legacy`], never written again.
    #[serde(
        default,
        rename = "per_user",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub legacy_per_user: BTreeMap<String, u64>,
    /// When the vendor closed the sale before its `closes_at` (absent in older values: not
    /// closed early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Millis>,
}

impl Sale {
    fn holds(&self, r: &Reservation) -> bool {
        r.sale == Some(self.epoch)
    }

    /// Not over at `now`: before its `closes_at` and not closed early. A new OpenSale amends a
    /// running sale (same epoch, counters kept) and starts a new one otherwise.
    pub fn is_running(&self, now: Millis) -> bool {
        self.closed_at.is_none() && now < self.terms.closes_at
    }
}

/// What a value written before issue #18 carried inline, to be stored under keys of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Legacy {
    pub reservations: BTreeMap<String, Reservation>,
    /// Units per buyer in the current sale (the only sale whose counters were kept).
    pub buyers: BTreeMap<String, u64>,
}

impl Legacy {
    pub fn is_empty(&self) -> bool {
        self.reservations.is_empty() && self.buyers.is_empty()
    }
}

/// A product as one command sees it: the product's own value and the entries kept under keys of
/// their own that the app loaded for the command. `decide` and `apply` read and write only the
/// command's order's reservation and the counter of the buyer it names (every counter for an
/// OpenSale that lowers a running sale's limit), so a slice holding just those decides and
/// changes exactly what a slice holding everything would (see the property test
/// `a_partial_slice_decides_like_the_whole_product`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductSlice {
    pub state: Option<ProductState>,
    /// Reservations by order id.
    pub reservations: BTreeMap<String, Reservation>,
    /// Units held per buyer in the current sale (the sale of `state`); a buyer holding nothing
    /// has no entry.
    pub buyers: BTreeMap<String, u64>,
}

impl ProductSlice {
    pub fn new(state: Option<ProductState>) -> Self {
        ProductSlice {
            state,
            ..ProductSlice::default()
        }
    }

    pub fn reservation_of(&self, order_id: &str) -> Option<&Reservation> {
        self.reservations.get(order_id)
    }

    /// Units the buyer holds in the current sale (as loaded).
    pub fn user_count(&self, username: &str) -> u64 {
        self.buyers.get(username).copied().unwrap_or(0)
    }

    /// The buyer whose counter in the current sale the command reads or writes, once the
    /// order's reservation is loaded: the command's buyer for a Reserve while the product has a
    /// sale, the reservation's buyer for a Release or Restock of a reservation held in the
    /// current sale. Commit moves no counter.
    pub fn buyer_of<'a>(&'a self, cmd: &'a StockCommand) -> Option<&'a str> {
        let sale = self.state.as_ref()?.sale.as_ref()?;
        match cmd {
            StockCommand::Reserve { username, .. } => Some(username),
            StockCommand::Release { order_id, .. } | StockCommand::Restock { order_id, .. } => self
                .reservation_of(order_id)
                .filter(|r| sale.holds(r))
                .map(|r| r.username.as_str()),
            _ => None,
        }
    }

    /// Whether the command needs every counter of the current sale: an OpenSale that lowers the
    /// per-user limit of a sale that is not over must find anyone already above the new limit.
    /// (Nobody is above a limit that is not lowered.)
    pub fn needs_every_buyer(&self, cmd: &StockCommand, now: Millis) -> bool {
        let StockCommand::OpenSale { sale: terms, .. } = cmd else {
            return false;
        };
        self.state
            .as_ref()
            .and_then(|p| p.sale.as_ref())
            .is_some_and(|s| s.is_running(now) && terms.per_user_limit < s.terms.per_user_limit)
    }

    fn apply(&mut self, fact: &StockFact) {
        if matches!(fact, StockFact::ProductCreated { .. }) {
            self.state = ProductState::created(fact);
            return;
        }
        let Some(p) = self.state.as_mut() else {
            return;
        };
        match fact {
            StockFact::SaleOpened { epoch, .. } => {
                // A new sale starts from zero: the counters loaded were the old sale's.
                if p.sale.as_ref().is_none_or(|s| s.epoch != *epoch) {
                    self.buyers.clear();
                }
                p.apply(fact);
            }
            StockFact::Reserved {
                order_id,
                username,
                quantity,
                unit_price,
                sale,
            } => {
                p.apply(fact);
                let r = Reservation {
                    quantity: *quantity,
                    username: username.clone(),
                    unit_price: *unit_price,
                    status: ReservationStatus::Reserved,
                    sale: *sale,
                };
                if let Some(s) = p.sale.as_mut().filter(|s| s.holds(&r)) {
                    s.taken += quantity;
                    *self.buyers.entry(username.clone()).or_default() += quantity;
                }
                self.reservations.insert(order_id.clone(), r);
            }
            StockFact::Released { order_id } => {
                self.finish(order_id, ReservationStatus::Released, |stock, q| {
                    stock.reserved -= q;
                    stock.available += q;
                });
            }
            StockFact::Committed { order_id } => {
                self.finish(order_id, ReservationStatus::Committed, |stock, q| {
                    stock.reserved -= q;
                    stock.sold += q;
                });
            }
            StockFact::Restocked { order_id } => {
                self.finish(order_id, ReservationStatus::Restocked, |stock, q| {
                    stock.sold -= q;
                    stock.available += q;
                });
            }
            _ => p.apply(fact),
        }
    }

    fn finish(
        &mut self,
        order_id: &str,
        to: ReservationStatus,
        levels: impl FnOnce(&mut StockLevels, i64),
    ) {
        let (Some(p), Some(r)) = (self.state.as_mut(), self.reservations.get_mut(order_id)) else {
            return;
        };
        levels(&mut p.stock, qty_i64(r.quantity));
        r.status = to;
        if !to.holds_units() {
            if let Some(s) = p.sale.as_mut().filter(|s| s.holds(r)) {
                s.taken = s.taken.saturating_sub(r.quantity);
                if let Some(n) = self.buyers.get_mut(&r.username) {
                    *n = n.saturating_sub(r.quantity);
                    if *n == 0 {
                        self.buyers.remove(&r.username);
                    }
                }
            }
        }
    }

    /// `Err` names the first broken invariant: the stock equation, a negative counter, a sale
    /// over its quantity, or a loaded buyer over the limit.
    pub fn check_invariants(&self) -> Result<(), String> {
        let Some(p) = &self.state else {
            return Ok(());
        };
        p.check_invariants()?;
        if let Some(sale) = &p.sale {
            if let Some((u, n)) = self
                .buyers
                .iter()
                .find(|(_, n)| **n > sale.terms.per_user_limit)
            {
                return Err(format!("{u} holds {n}, over the per-user limit"));
            }
        }
        Ok(())
    }
}

/// The order whose reservation a command reads or writes.
pub fn order_of(cmd: &StockCommand) -> Option<&str> {
    match cmd {
        StockCommand::Reserve { order_id, .. }
        | StockCommand::Release { order_id, .. }
        | StockCommand::Commit { order_id, .. }
        | StockCommand::Restock { order_id, .. } => Some(order_id),
        _ => None,
    }
}

/// What happened to a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StockFact {
    ProductCreated {
        product_id: String,
        vendor_id: String,
        name: String,
        description: String,
        price: Amount,
        image_url: Option<String>,
        public: bool,
    },
    ProductUpdated {
        name: Option<String>,
        description: Option<String>,
        price: Option<Amount>,
        image_url: Option<String>,
        public: Option<bool>,
    },
    ProductDeleted,
    /// SetStock, recorded as a change of `added` so the stock invariant keeps holding.
    StockAdjusted {
        delta: i64,
    },
    StockAdded {
        quantity: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// Same epoch as the current sale: new terms, counters kept. New epoch: a fresh sale.
    SaleOpened {
        terms: SaleTerms,
        epoch: u32,
    },
    /// The vendor ended the sale early, at `at` (processor time).
    SaleClosed {
        at: Millis,
    },
    SaleQuantitySet {
        quantity: u64,
    },
    /// A sale removed before it opened.
    SaleDeleted,
    Reserved {
        order_id: String,
        username: String,
        quantity: u64,
        unit_price: Amount,
        sale: Option<u32>,
    },
    Released {
        order_id: String,
    },
    Committed {
        order_id: String,
    },
    Restocked {
        order_id: String,
    },
}

/// A record the stock processor sends.
#[derive(Debug, Clone, PartialEq)]
pub enum StockEffect {
    /// The answer to a Reserve, on `order-replies` keyed by order id.
    Reply(OrderReply),
    /// To the vendor's catalog, on `vendor-commands` keyed by vendor id: a product created under
    /// it (`ProductListed`), so that deleting the vendor deletes the product (see
    /// [`crate::vendor`]).
    Vendor(VendorCommand),
}

/// The rules of products: catalogue entry, stock levels, reservations and sale.
#[derive(Debug, Clone, Copy, Default)]
pub struct Product;

impl Aggregate for Product {
    type State = ProductSlice;
    type Input = StockCommand;
    type Fact = StockFact;
    type Effect = StockEffect;

    /// `now` only matters for OpenSale (is the current sale over?); a reservation's sale window
    /// is checked against the order's `placed_at`, so a reply delayed by a rebalance does not
    /// turn an in-time order into a late one.
    fn decide(
        &self,
        product: &ProductSlice,
        cmd: &StockCommand,
        now: Millis,
    ) -> Result<Vec<StockFact>, Rejection> {
        let state = product.state.as_ref();
        match cmd {
            StockCommand::CreateProduct {
                product_id,
                vendor_id,
                name,
                description,
                price,
                image_url,
                public,
            } => {
                let created = StockFact::ProductCreated {
                    product_id: product_id.clone(),
                    vendor_id: vendor_id.clone(),
                    name: name.trim().to_string(),
                    description: description.clone(),
                    price: *price,
                    image_url: image_url.clone(),
                    public: *public,
                };
                if let Some(p) = state {
                    // A redelivered create is harmless; a different product under the same id
                    // is not.
                    return if ProductState::created(&created).as_ref() == Some(&p.info_only()) {
                        Ok(vec![])
                    } else {
                        Err(Rejection::conflict(format!(
                            "product {} already exists",
                            p.product_id
                        )))
                    };
                }
                if product_id.trim().is_empty() || vendor_id.trim().is_empty() {
                    return Err(Rejection::invalid("product and vendor ids are required"));
                }
                check_name(name)?;
                check_description(description)?;
                check_price(*price)?;
                Ok(vec![created])
            }
            StockCommand::UpdateProduct {
                name,
                description,
                price,
                image_url,
                public,
                ..
            } => {
                live(state)?;
                if let Some(name) = name {
                    check_name(name)?;
                }
                if let Some(description) = description {
                    check_description(description)?;
                }
                if let Some(price) = price {
                    check_price(*price)?;
                }
                if name.is_none()
                    && description.is_none()
                    && price.is_none()
                    && image_url.is_none()
                    && public.is_none()
                {
                    return Ok(vec![]);
                }
                Ok(vec![StockFact::ProductUpdated {
                    name: name.as_ref().map(|n| n.trim().to_string()),
                    description: description.clone(),
                    price: *price,
                    image_url: image_url.clone(),
                    public: *public,
                }])
            }
            StockCommand::DeleteProduct { .. } => match state {
                None => Err(Rejection::not_found("no such product")),
                Some(p) if p.deleted => Ok(vec![]),
                Some(_) => Ok(vec![StockFact::ProductDeleted]),
            },
            StockCommand::SetStock { quantity, .. } => {
                let p = live(state)?;
                let delta = qty_i64(*quantity) - p.stock.available;
                Ok(if delta == 0 {
                    vec![]
                } else {
                    vec![StockFact::StockAdjusted { delta }]
                })
            }
            StockCommand::AddStock {
                quantity,
                request_id,
                ..
            } => {
                let p = live(state)?;
                check_quantity(*quantity)?;
                if request_id
                    .as_ref()
                    .is_some_and(|id| p.recent_adds.contains(id))
                {
                    return Ok(vec![]);
                }
                Ok(vec![StockFact::StockAdded {
                    quantity: *quantity,
                    request_id: request_id.clone(),
                }])
            }
            StockCommand::OpenSale { sale: terms, .. } => {
                let p = live(state)?;
                check_sale_terms(terms)?;
                let epoch = match &p.sale {
                    // Amending a sale that is not over keeps what buyers already hold, so the new
                    // terms must still cover it.
                    Some(s) if s.is_running(now) => {
                        if terms.quantity < s.taken {
                            return Err(Rejection::invalid(format!(
                                "sale quantity {} is below the {} units already taken",
                                terms.quantity, s.taken
                            )));
                        }
                        if let Some((user, n)) = product
                            .buyers
                            .iter()
                            .find(|(_, n)| **n > terms.per_user_limit)
                        {
                            return Err(Rejection::invalid(format!(
                                "per-user limit {} is below the {n} units {user} already holds",
                                terms.per_user_limit
                            )));
                        }
                        s.epoch
                    }
                    Some(s) => s.epoch + 1,
                    None => p.last_sale_epoch + 1,
                };
                Ok(vec![StockFact::SaleOpened {
                    terms: terms.clone(),
                    epoch,
                }])
            }
            StockCommand::CloseSale { .. } => {
                let s = current_sale(live(state)?)?;
                // Closing a sale that is already over (early or by time) changes nothing.
                if !s.is_running(now) {
                    return Ok(vec![]);
                }
                Ok(vec![StockFact::SaleClosed { at: now }])
            }
            StockCommand::SetSaleQuantity { quantity, .. } => {
                let s = current_sale(live(state)?)?;
                check_sale_quantity(*quantity)?;
                if !s.is_running(now) {
                    return Err(Rejection::transition("the sale is over"));
                }
                // Units taken stay taken: the sale cannot offer fewer than it already gave.
                if *quantity < s.taken {
                    return Err(Rejection::invalid(format!(
                        "sale quantity {quantity} is below the {} units already taken",
                        s.taken
                    )));
                }
                if *quantity == s.terms.quantity {
                    return Ok(vec![]);
                }
                Ok(vec![StockFact::SaleQuantitySet {
                    quantity: *quantity,
                }])
            }
            StockCommand::DeleteSale { .. } => {
                let Some(s) = &live(state)?.sale else {
                    // Already deleted (or never opened): nothing to do, as a repeat expects.
                    return Ok(vec![]);
                };
                // Once open, buyers may hold units of it (or have been told it exists): it can
                // only be closed. `taken` covers a Reserve placed a moment before `now`.
                if now >= s.terms.opens_at || s.taken > 0 {
                    return Err(Rejection::transition(
                        "the sale has opened: close it instead of deleting it",
                    ));
                }
                Ok(vec![StockFact::SaleDeleted])
            }
            StockCommand::Reserve {
                order_id,
                username,
                quantity,
                placed_at,
                ..
            } => {
                let p = state.ok_or_else(|| Rejection::not_found("no such product"))?;
                if product.reservations.contains_key(order_id) {
                    return Ok(vec![]);
                }
                // Only a public product is for sale. A private one is refused in the very words
                // of a product that does not exist, before any other check, so that a buyer
                // learns nothing of it (not even that it is deleted).
                if !p.public {
                    return Err(Rejection::not_found("no such product"));
                }
                check_quantity(*quantity)?;
                if order_id.is_empty() || username.is_empty() {
                    return Err(Rejection::invalid("order id and username are required"));
                }
                if p.deleted {
                    return Err(Rejection::not_found("the product was deleted"));
                }
                if let Some(s) = &p.sale {
                    // Closed early: nothing more, whenever the order was placed.
                    if let Some(closed_at) = s.closed_at {
                        return Err(Rejection::SaleClosed {
                            closes_at: closed_at,
                        });
                    }
                    if *placed_at < s.terms.opens_at {
                        return Err(Rejection::SaleNotOpen {
                            opens_at: s.terms.opens_at,
                        });
                    }
                    if *placed_at >= s.terms.closes_at {
                        return Err(Rejection::SaleClosed {
                            closes_at: s.terms.closes_at,
                        });
                    }
                    let remaining = s.terms.quantity.saturating_sub(s.taken);
                    if *quantity > remaining {
                        return Err(Rejection::SaleSoldOut {
                            requested: *quantity,
                            remaining,
                        });
                    }
                    let already = product.user_count(username);
                    if already + quantity > s.terms.per_user_limit {
                        return Err(Rejection::UserLimit {
                            limit: s.terms.per_user_limit,
                            already,
                            requested: *quantity,
                        });
                    }
                }
                if p.stock.available < qty_i64(*quantity) {
                    return Err(Rejection::OutOfStock {
                        requested: *quantity,
                        available: p.stock.available,
                    });
                }
                Ok(vec![StockFact::Reserved {
                    order_id: order_id.clone(),
                    username: username.clone(),
                    quantity: *quantity,
                    unit_price: p.price,
                    sale: p.sale.as_ref().map(|s| s.epoch),
                }])
            }
            // Release, Commit and Restock still work on a deleted product: orders in flight must be
            // able to finish or give their units back.
            StockCommand::Release { order_id, .. } => Ok(step(
                product,
                order_id,
                ReservationStatus::Reserved,
                StockFact::Released {
                    order_id: order_id.clone(),
                },
            )),
            StockCommand::Commit { order_id, .. } => Ok(step(
                product,
                order_id,
                ReservationStatus::Reserved,
                StockFact::Committed {
                    order_id: order_id.clone(),
                },
            )),
            StockCommand::Restock { order_id, .. } => Ok(step(
                product,
                order_id,
                ReservationStatus::Committed,
                StockFact::Restocked {
                    order_id: order_id.clone(),
                },
            )),
        }
    }

    /// Only `ProductCreated` makes a product out of nothing; any other fact without a product
    /// is ignored (decide never produces one).
    fn apply(mut product: ProductSlice, fact: &StockFact) -> ProductSlice {
        product.apply(fact);
        product
    }

    /// A product created is listed under its vendor in the catalog (the deletion of the vendor
    /// then deletes it). No other fact calls for a record of its own: what the saga hears of a
    /// Reserve is the [`Aggregate::answer`], which a redelivered or refused Reserve gets too.
    fn effects(
        _before: &ProductSlice,
        fact: &StockFact,
        _after: &ProductSlice,
    ) -> Vec<StockEffect> {
        match fact {
            StockFact::ProductCreated {
                product_id,
                vendor_id,
                ..
            } => vec![StockEffect::Vendor(VendorCommand::ProductListed {
                vendor_id: vendor_id.clone(),
                product_id: product_id.clone(),
            })],
            _ => Vec::new(),
        }
    }

    /// A Reserve is answered from the product once its facts (if any) are applied: a
    /// redelivered Reserve (no facts) from the stored reservation, with the price it was taken
    /// at; a refused one with the reason. Other commands are not answered.
    fn answer(
        after: &ProductSlice,
        cmd: &StockCommand,
        rejection: Option<&Rejection>,
    ) -> Option<StockEffect> {
        let StockCommand::Reserve {
            product_id,
            order_id,
            ..
        } = cmd
        else {
            return None;
        };
        Some(StockEffect::Reply(reserve_reply(
            after, product_id, order_id, rejection,
        )))
    }
}

/// The reservation moves only from `from`; anything else is a duplicate or a late command and
/// a no-op, which is what makes Release, Commit and Restock idempotent. An unknown reservation
/// (never made, refused, or final and pruned) is a no-op too.
fn step(
    product: &ProductSlice,
    order_id: &str,
    from: ReservationStatus,
    event: StockFact,
) -> Vec<StockFact> {
    match product.state.as_ref().and(product.reservation_of(order_id)) {
        Some(r) if r.status == from => vec![event],
        _ => vec![],
    }
}

fn current_sale(p: &ProductState) -> Result<&Sale, Rejection> {
    p.sale
        .as_ref()
        .ok_or_else(|| Rejection::not_found("the product has no sale"))
}

fn live(state: Option<&ProductState>) -> Result<&ProductState, Rejection> {
    match state {
        None => Err(Rejection::not_found("no such product")),
        Some(p) if p.deleted => Err(Rejection::not_found("the product was deleted")),
        Some(p) => Ok(p),
    }
}

// The shape rules of the stock commands. The gateway checks a request with these same
// functions (field by field), so a command it accepts is never refused here for its shape.

/// A product's name is not blank and is one line of visible text (no control or format
/// characters: see [`visible_text`]).
pub fn check_name(name: &str) -> Result<(), Rejection> {
    non_empty("name", name)?;
    visible_text("name", name, false)
}

/// A product's description (which may be empty) is visible text; it may hold several lines
/// and tabs.
pub fn check_description(description: &str) -> Result<(), Rejection> {
    visible_text("description", description, true)
}

/// A product's price is positive (in the shop's minor unit).
pub fn check_price(price: Amount) -> Result<(), Rejection> {
    positive("price", price)
}

/// Units added to the stock (or reserved) are at least one.
pub fn check_quantity(quantity: u64) -> Result<(), Rejection> {
    positive("quantity", quantity)
}

/// A sale opens before it closes.
pub fn check_sale_window(opens_at: Millis, closes_at: Millis) -> Result<(), Rejection> {
    if opens_at >= closes_at {
        return Err(Rejection::invalid("a sale must open before it closes"));
    }
    Ok(())
}

/// A sale offers at least one unit.
pub fn check_sale_quantity(quantity: u64) -> Result<(), Rejection> {
    if quantity == 0 {
        return Err(Rejection::invalid(
            "sale quantity and per-user limit must be positive",
        ));
    }
    Ok(())
}

/// A buyer may take at least one unit of a sale.
pub fn check_sale_limit(per_user_limit: u64) -> Result<(), Rejection> {
    if per_user_limit == 0 {
        return Err(Rejection::invalid(
            "sale quantity and per-user limit must be positive",
        ));
    }
    Ok(())
}

/// The shape of a sale's terms (what it amends or renews is decided against the product).
pub fn check_sale_terms(terms: &SaleTerms) -> Result<(), Rejection> {
    check_sale_window(terms.opens_at, terms.closes_at)?;
    check_sale_quantity(terms.quantity)?;
    check_sale_limit(terms.per_user_limit)
}

impl ProductState {
    fn created(fact: &StockFact) -> Option<ProductState> {
        let StockFact::ProductCreated {
            product_id,
            vendor_id,
            name,
            description,
            price,
            image_url,
            public,
        } = fact
        else {
            return None;
        };
        Some(ProductState {
            product_id: product_id.clone(),
            vendor_id: vendor_id.clone(),
            name: name.clone(),
            description: description.clone(),
            price: *price,
            image_url: image_url.clone(),
            public: *public,
            deleted: false,
            stock: StockLevels::default(),
            legacy_reservations: BTreeMap::new(),
            sale: None,
            recent_adds: Vec::new(),
            last_sale_epoch: 0,
        })
    }

    /// The catalogue fields alone, to compare with a redelivered CreateProduct.
    fn info_only(&self) -> ProductState {
        ProductState {
            deleted: false,
            stock: StockLevels::default(),
            legacy_reservations: BTreeMap::new(),
            sale: None,
            recent_adds: Vec::new(),
            last_sale_epoch: 0,
            ..self.clone()
        }
    }

    /// The product's own part of a fact: catalogue fields, levels and sale terms. What a fact
    /// does to a reservation or a buyer's counter is [`ProductSlice::apply`]'s.
    fn apply(&mut self, fact: &StockFact) {
        match fact {
            StockFact::ProductUpdated {
                name,
                description,
                price,
                image_url,
                public,
            } => {
                if let Some(v) = name {
                    self.name = v.clone();
                }
                if let Some(v) = description {
                    self.description = v.clone();
                }
                if let Some(v) = price {
                    self.price = *v;
                }
                if let Some(v) = image_url {
                    self.image_url = Some(v.clone());
                }
                if let Some(v) = public {
                    self.public = *v;
                }
            }
            StockFact::ProductDeleted => self.deleted = true,
            StockFact::StockAdjusted { delta } => {
                self.stock.added += delta;
                self.stock.available += delta;
            }
            StockFact::StockAdded {
                quantity,
                request_id,
            } => {
                self.stock.added += qty_i64(*quantity);
                self.stock.available += qty_i64(*quantity);
                if let Some(id) = request_id {
                    self.recent_adds.push(id.clone());
                    let over = self.recent_adds.len().saturating_sub(RECENT_ADDS);
                    self.recent_adds.drain(..over);
                }
            }
            StockFact::SaleOpened { terms, epoch } => match &mut self.sale {
                Some(s) if s.epoch == *epoch => s.terms = terms.clone(),
                _ => {
                    self.sale = Some(Sale {
                        terms: terms.clone(),
                        epoch: *epoch,
                        taken: 0,
                        legacy_per_user: BTreeMap::new(),
                        closed_at: None,
                    })
                }
            },
            StockFact::SaleClosed { at } => {
                if let Some(s) = &mut self.sale {
                    s.closed_at = Some(*at);
                }
            }
            StockFact::SaleQuantitySet { quantity } => {
                if let Some(s) = &mut self.sale {
                    s.terms.quantity = *quantity;
                }
            }
            StockFact::SaleDeleted => {
                if let Some(s) = self.sale.take() {
                    self.last_sale_epoch = s.epoch;
                }
            }
            StockFact::Reserved { quantity, .. } => {
                let q = qty_i64(*quantity);
                self.stock.available -= q;
                self.stock.reserved += q;
            }
            StockFact::ProductCreated { .. }
            | StockFact::Released { .. }
            | StockFact::Committed { .. }
            | StockFact::Restocked { .. } => {}
        }
    }

    /// Take out what a value written before issue #18 carried inline (every reservation, and
    /// the current sale's counters), leaving the slim value. A slim value gives nothing.
    pub fn split_legacy(&mut self) -> Legacy {
        Legacy {
            reservations: std::mem::take(&mut self.legacy_reservations),
            buyers: self
                .sale
                .as_mut()
                .map(|s| std::mem::take(&mut s.legacy_per_user))
                .unwrap_or_default(),
        }
    }

    /// `Err` names the first broken invariant of the product's own value: the stock equation, a
    /// negative counter, or a sale over its quantity.
    pub fn check_invariants(&self) -> Result<(), String> {
        let s = &self.stock;
        if s.initial + s.added != s.available + s.reserved + s.sold {
            return Err(format!("stock equation broken: {s:?}"));
        }
        if [s.initial, s.added, s.available, s.reserved, s.sold]
            .iter()
            .any(|n| *n < 0)
        {
            return Err(format!("negative stock counter: {s:?}"));
        }
        if let Some(sale) = &self.sale {
            if sale.taken > sale.terms.quantity {
                return Err(format!("sale oversold: {sale:?}"));
            }
        }
        Ok(())
    }

    pub fn to_view(&self, meta: &ViewMeta) -> ProductView {
        ProductView {
            product_id: self.product_id.clone(),
            vendor_id: self.vendor_id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            price: self.price,
            image_url: self.image_url.clone(),
            public: self.public,
            deleted: self.deleted,
            stock: self.stock.clone(),
            sale: self.sale.as_ref().map(|s| SaleStatus {
                terms: s.terms.clone(),
                taken: s.taken,
                epoch: s.epoch,
                closed_at: s.closed_at,
            }),
            rejection: meta.rejection.clone(),
            updated_at: meta.updated_at,
            version: meta.version,
        }
    }
}

/// A buyer's counter that a command changed: (username, sale epoch, units now held).
pub type TakeChange = (String, u32, u64);

impl ProductSlice {
    /// The buyers' counters of the current sale that differ between `before` and `after` (a
    /// buyer who gave everything back holds 0), for the `view-sale-takes` records. Counters of a
    /// sale that a new one replaced are not repeated: their epoch is no longer the product's.
    pub fn take_changes(before: &ProductSlice, after: &ProductSlice) -> Vec<TakeChange> {
        let epoch = |p: &ProductSlice| p.state.as_ref()?.sale.as_ref().map(|s| s.epoch);
        let Some(now) = epoch(after) else {
            return Vec::new();
        };
        let same = epoch(before) == Some(now);
        let mut changes: Vec<TakeChange> = after
            .buyers
            .iter()
            .filter(|(u, n)| !same || before.buyers.get(*u) != Some(n))
            .map(|(u, n)| (u.clone(), now, *n))
            .collect();
        if same {
            changes.extend(
                before
                    .buyers
                    .keys()
                    .filter(|u| !after.buyers.contains_key(*u))
                    .map(|u| (u.clone(), now, 0)),
            );
        }
        changes
    }
}

// What the public sees of stock and sales (exact levels are for the vendor's managers and
// MASTER): one rule, used by the gateway for every product and sale it serves.

/// At most this many units left is LOW, however large the stock.
pub const LOW_UNITS: i64 = 5;
/// At most this share (percent) of the units ever offered left is LOW too.
pub const LOW_PERCENT: i64 = 10;

/// `remaining` units of `total` ever offered: SOLD_OUT at 0 (or below), LOW at most
/// [`LOW_UNITS`] or at most [`LOW_PERCENT`] % of `total`, IN_STOCK otherwise.
pub fn availability(remaining: i64, total: i64) -> Availability {
    if remaining <= 0 {
        Availability::SoldOut
    } else if remaining <= LOW_UNITS
        || remaining.saturating_mul(100) <= total.saturating_mul(LOW_PERCENT)
    {
        Availability::Low
    } else {
        Availability::InStock
    }
}

/// A product's stock: `available` of everything it ever had (`initial + added`).
pub fn stock_availability(levels: &StockLevels) -> Availability {
    availability(levels.available, levels.initial + levels.added)
}

/// Units a sale can still give: its own remainder, and never more than the stock available.
pub fn sale_remaining(sale: &SaleStatus, levels: &StockLevels) -> i64 {
    let own = qty_i64(sale.terms.quantity.saturating_sub(sale.taken));
    own.min(levels.available.max(0))
}

/// A sale's remaining share, as a state (of the sale's quantity).
pub fn sale_availability(sale: &SaleStatus, levels: &StockLevels) -> Availability {
    availability(sale_remaining(sale, levels), qty_i64(sale.terms.quantity))
}

/// Where a sale stands at `now`: CLOSED once closed early or past `closes_at`, UPCOMING before
/// `opens_at`, SOLD_OUT when open with nothing left ([`sale_remaining`]), OPEN otherwise. The
/// processor decides a Reserve against the order's `placed_at`; this is for readers.
pub fn sale_state(sale: &SaleStatus, levels: &StockLevels, now: Millis) -> SaleState {
    if sale.closed_at.is_some() || now >= sale.terms.closes_at {
        SaleState::Closed
    } else if now < sale.terms.opens_at {
        SaleState::Upcoming
    } else if sale_remaining(sale, levels) <= 0 {
        SaleState::SoldOut
    } else {
        SaleState::Open
    }
}

fn reserve_reply(
    after: &ProductSlice,
    product_id: &str,
    order_id: &str,
    rejection: Option<&Rejection>,
) -> OrderReply {
    let rejected = |reason: String| OrderReply::StockRejected {
        order_id: order_id.to_string(),
        product_id: product_id.to_string(),
        reason,
    };
    if let Some(r) = rejection {
        return rejected(r.to_string());
    }
    match after
        .state
        .as_ref()
        .and_then(|p| after.reservation_of(order_id).map(|r| (p, r)))
    {
        Some((p, r)) if r.status.holds_units() => OrderReply::StockReserved {
            order_id: order_id.to_string(),
            product_id: product_id.to_string(),
            quantity: r.quantity,
            unit_price: r.unit_price,
            vendor_id: p.vendor_id.clone(),
        },
        Some(_) => rejected("the reservation was already released".into()),
        None => rejected("no such product".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "p1";

    fn create() -> StockCommand {
        StockCommand::CreateProduct {
            product_id: P.into(),
            vendor_id: "v1".into(),
            name: "Mug".into(),
            description: "a mug".into(),
            price: 1200,
            image_url: None,
            public: true,
        }
    }

    fn reserve(order: &str, user: &str, quantity: u64, placed_at: Millis) -> StockCommand {
        StockCommand::Reserve {
            product_id: P.into(),
            order_id: order.into(),
            username: user.into(),
            quantity,
            placed_at,
        }
    }

    fn release(order: &str) -> StockCommand {
        StockCommand::Release {
            product_id: P.into(),
            order_id: order.into(),
        }
    }
    fn commit(order: &str) -> StockCommand {
        StockCommand::Commit {
            product_id: P.into(),
            order_id: order.into(),
        }
    }
    fn restock(order: &str) -> StockCommand {
        StockCommand::Restock {
            product_id: P.into(),
            order_id: order.into(),
        }
    }
    fn add(quantity: u64) -> StockCommand {
        add_as(quantity, None)
    }
    fn add_as(quantity: u64, request_id: Option<&str>) -> StockCommand {
        StockCommand::AddStock {
            product_id: P.into(),
            quantity,
            request_id: request_id.map(String::from),
        }
    }
    fn set(quantity: u64) -> StockCommand {
        StockCommand::SetStock {
            product_id: P.into(),
            quantity,
        }
    }
    fn open_sale(opens_at: Millis, closes_at: Millis, quantity: u64, limit: u64) -> StockCommand {
        StockCommand::OpenSale {
            product_id: P.into(),
            sale: SaleTerms {
                opens_at,
                closes_at,
                quantity,
                per_user_limit: limit,
            },
        }
    }

    /// The whole product: its value with every reservation and every counter of the current
    /// sale, as the app's store holds them under their keys. The tests read it like the value.
    #[derive(Debug, Clone, PartialEq)]
    struct Whole(ProductSlice);

    impl std::ops::Deref for Whole {
        type Target = ProductState;
        fn deref(&self) -> &ProductState {
            self.0.state.as_ref().expect("a product")
        }
    }

    impl Whole {
        fn reservation_of(&self, order_id: &str) -> Option<&Reservation> {
            self.0.reservation_of(order_id)
        }
        fn user_count(&self, username: &str) -> u64 {
            self.0.user_count(username)
        }
    }

    // `None` is no product, as in the app before a CreateProduct.
    fn decide(
        p: Option<&Whole>,
        cmd: &StockCommand,
        now: Millis,
    ) -> Result<Vec<StockFact>, Rejection> {
        Product.decide(p.map_or(&ProductSlice::default(), |w| &w.0), cmd, now)
    }

    fn apply(p: Option<Whole>, event: &StockFact) -> Option<Whole> {
        let after = Product::apply(p.map(|w| w.0).unwrap_or_default(), event);
        after.state.is_some().then_some(Whole(after))
    }

    fn reserve_reply(
        p: Option<&Whole>,
        product_id: &str,
        order_id: &str,
        rejection: Option<&Rejection>,
    ) -> OrderReply {
        super::reserve_reply(
            p.map_or(&ProductSlice::default(), |w| &w.0),
            product_id,
            order_id,
            rejection,
        )
    }

    /// Runs a command and applies its facts, checking the invariants after each.
    fn run(state: Option<Whole>, cmd: &StockCommand, now: Millis) -> Option<Whole> {
        let events = decide(state.as_ref(), cmd, now).expect("accepted");
        let after = events.iter().fold(state, apply);
        if let Some(p) = &after {
            p.0.check_invariants().unwrap();
        }
        after
    }

    fn product(stock: u64) -> Whole {
        let p = run(None, &create(), 0);
        run(p, &add(stock), 0).unwrap()
    }

    fn levels(p: &ProductState) -> (i64, i64, i64, i64) {
        (
            p.stock.added,
            p.stock.available,
            p.stock.reserved,
            p.stock.sold,
        )
    }

    fn rejected(p: Option<&Whole>, cmd: &StockCommand, now: Millis) -> &'static str {
        decide(p, cmd, now).unwrap_err().code()
    }

    #[test]
    fn create_validates_and_happens_once() {
        let p = run(None, &create(), 0).unwrap();
        assert_eq!(p.price, 1200);
        assert_eq!(p.stock, StockLevels::default());
        // Same create again: a redelivery, nothing to do.
        assert_eq!(decide(Some(&p), &create(), 0), Ok(vec![]));
        let mut other = create();
        if let StockCommand::CreateProduct { price, .. } = &mut other {
            *price = 5;
        }
        assert_eq!(rejected(Some(&p), &other, 0), "CONFLICT");

        for bad in [0, -1] {
            let mut cmd = create();
            if let StockCommand::CreateProduct { price, .. } = &mut cmd {
                *price = bad;
            }
            assert_eq!(rejected(None, &cmd, 0), "INVALID");
        }
        let mut cmd = create();
        if let StockCommand::CreateProduct { name, .. } = &mut cmd {
            *name = "  ".into();
        }
        assert_eq!(rejected(None, &cmd, 0), "INVALID");
    }

    #[test]
    fn update_changes_given_fields_only() {
        let p = product(1);
        let cmd = StockCommand::UpdateProduct {
            product_id: P.into(),
            name: Some("Big mug".into()),
            description: None,
            price: Some(1500),
            image_url: Some("http://img".into()),
            public: Some(false),
        };
        let p = run(Some(p), &cmd, 1).unwrap();
        assert_eq!(
            (p.name.as_str(), p.description.as_str(), p.price, p.public),
            ("Big mug", "a mug", 1500, false)
        );
        assert_eq!(p.image_url.as_deref(), Some("http://img"));

        let update = |name: Option<&str>, price: Option<Amount>| StockCommand::UpdateProduct {
            product_id: P.into(),
            name: name.map(String::from),
            description: None,
            price,
            image_url: None,
            public: None,
        };
        assert_eq!(decide(Some(&p), &update(None, None), 1), Ok(vec![]));
        assert_eq!(rejected(Some(&p), &update(None, Some(0)), 1), "INVALID");
        assert_eq!(rejected(Some(&p), &update(Some(""), None), 1), "INVALID");
        assert_eq!(rejected(None, &update(None, None), 1), "NOT_FOUND");
    }

    /// A command published around the gateway meets the same character rule.
    #[test]
    fn invisible_characters_in_a_name_or_description_are_refused() {
        let with = |name: &str, description: &str| {
            let mut cmd = create();
            if let StockCommand::CreateProduct {
                name: n,
                description: d,
                ..
            } = &mut cmd
            {
                *n = name.into();
                *d = description.into();
            }
            cmd
        };
        assert_eq!(rejected(None, &with("Mug\u{202E}", "a mug"), 0), "INVALID");
        assert_eq!(rejected(None, &with("Mug", "a\u{200B}mug"), 0), "INVALID");
        assert_eq!(rejected(None, &with("Mug\nCup", "a mug"), 0), "INVALID");
        assert_eq!(
            decide(None, &with("녹차 머그", "Crème brûlée\n\tcup"), 0).map(|f| f.len()),
            Ok(1)
        );
        let p = product(1);
        let update = |name: Option<&str>, description: Option<&str>| StockCommand::UpdateProduct {
            product_id: P.into(),
            name: name.map(String::from),
            description: description.map(String::from),
            price: None,
            image_url: None,
            public: None,
        };
        assert_eq!(
            rejected(Some(&p), &update(Some("\u{2066}Mug"), None), 1),
            "INVALID"
        );
        assert_eq!(
            rejected(Some(&p), &update(None, Some("\u{FEFF}a mug")), 1),
            "INVALID"
        );
        assert!(decide(Some(&p), &update(Some("큰 머그"), Some("two\nlines")), 1).is_ok());
    }

    #[test]
    fn deleted_products_refuse_changes_but_finish_orders() {
        let p = run(Some(product(5)), &reserve("o1", "ann", 2, 0), 0).unwrap();
        let p = run(
            Some(p),
            &StockCommand::DeleteProduct {
                product_id: P.into(),
            },
            1,
        )
        .unwrap();
        assert!(p.deleted);
        let del = StockCommand::DeleteProduct {
            product_id: P.into(),
        };
        assert_eq!(decide(Some(&p), &del, 1), Ok(vec![]));
        assert_eq!(rejected(None, &del, 1), "NOT_FOUND");
        for cmd in [
            add(1),
            set(3),
            open_sale(0, 10, 1, 1),
            reserve("o2", "bob", 1, 0),
        ] {
            assert_eq!(rejected(Some(&p), &cmd, 1), "NOT_FOUND", "{cmd:?}");
        }
        let p = run(Some(p), &commit("o1"), 2).unwrap();
        assert_eq!(levels(&p), (5, 3, 0, 2));
        let p = run(Some(p), &restock("o1"), 3).unwrap();
        assert_eq!(levels(&p), (5, 5, 0, 0));
    }

    #[test]
    fn an_add_repeated_under_its_request_id_adds_once_within_the_window() {
        let mut p = product(5);
        for _ in 0..2 {
            p = run(Some(p), &add_as(3, Some("r-1")), 0).unwrap();
        }
        assert_eq!(levels(&p).0, 8, "r-1 added once");
        // Adds without an id are each their own; the window forgets the oldest ids.
        p = run(Some(p), &add(1), 0).unwrap();
        p = run(Some(p), &add(1), 0).unwrap();
        assert_eq!(levels(&p).0, 10);
        for i in 0..RECENT_ADDS {
            p = run(Some(p), &add_as(1, Some(&format!("w-{i}"))), 0).unwrap();
        }
        assert_eq!(p.recent_adds.len(), RECENT_ADDS, "bounded");
        assert!(!p.recent_adds.contains(&"r-1".to_string()));
    }

    #[test]
    fn add_and_set_stock_keep_the_equation() {
        let p = product(5);
        assert_eq!(levels(&p), (5, 5, 0, 0));
        assert_eq!(rejected(Some(&p), &add(0), 0), "INVALID");
        assert_eq!(rejected(None, &add(1), 0), "NOT_FOUND");
        let p = run(Some(p), &reserve("o1", "ann", 2, 0), 0).unwrap();
        let p = run(Some(p), &commit("o1"), 0).unwrap();
        // Setting available below what was added lowers `added`; sold units are untouched.
        let p = run(Some(p), &set(1), 0).unwrap();
        assert_eq!(levels(&p), (3, 1, 0, 2));
        let p = run(Some(p), &set(0), 0).unwrap();
        assert_eq!(levels(&p), (2, 0, 0, 2));
        assert_eq!(decide(Some(&p), &set(0), 0), Ok(vec![]));
        let p = run(Some(p), &set(10), 0).unwrap();
        assert_eq!(levels(&p), (12, 10, 0, 2));
        assert_eq!(rejected(None, &set(1), 0), "NOT_FOUND");
    }

    #[test]
    fn reserve_takes_available_once_per_order() {
        let p = product(5);
        let p = run(Some(p), &reserve("o1", "ann", 3, 0), 0).unwrap();
        assert_eq!(levels(&p), (5, 2, 3, 0));
        let r = p.reservation_of("o1").unwrap();
        assert_eq!((r.quantity, r.unit_price), (3, 1200));
        assert_eq!(r.status, ReservationStatus::Reserved);
        // Redelivery, even with another quantity: the order already holds its line.
        assert_eq!(decide(Some(&p), &reserve("o1", "ann", 3, 0), 0), Ok(vec![]));
        assert_eq!(decide(Some(&p), &reserve("o1", "ann", 9, 0), 0), Ok(vec![]));
        assert_eq!(
            decide(Some(&p), &reserve("o2", "bob", 3, 0), 0),
            Err(Rejection::OutOfStock {
                requested: 3,
                available: 2
            })
        );
        assert_eq!(
            rejected(Some(&p), &reserve("o2", "bob", 0, 0), 0),
            "INVALID"
        );
        assert_eq!(rejected(Some(&p), &reserve("", "bob", 1, 0), 0), "INVALID");
        assert_eq!(rejected(None, &reserve("o2", "bob", 1, 0), 0), "NOT_FOUND");
        let p = run(Some(p), &reserve("o2", "bob", 2, 0), 0).unwrap();
        assert_eq!(levels(&p), (5, 0, 5, 0));
    }

    #[test]
    fn release_commit_restock_are_idempotent() {
        let p = product(5);
        let p = run(Some(p), &reserve("o1", "ann", 2, 0), 0).unwrap();
        let p = run(Some(p), &reserve("o2", "bob", 1, 0), 0).unwrap();

        let p = run(Some(p), &release("o1"), 0).unwrap();
        assert_eq!(levels(&p), (5, 4, 1, 0));
        for cmd in [
            release("o1"),
            commit("o1"),
            restock("o1"),
            release("nobody"),
        ] {
            assert_eq!(decide(Some(&p), &cmd, 0), Ok(vec![]), "{cmd:?}");
        }
        // A redelivered Reserve after its Release must not take the stock again.
        assert_eq!(decide(Some(&p), &reserve("o1", "ann", 2, 0), 0), Ok(vec![]));

        let p = run(Some(p), &commit("o2"), 0).unwrap();
        assert_eq!(levels(&p), (5, 4, 0, 1));
        assert_eq!(decide(Some(&p), &commit("o2"), 0), Ok(vec![]));
        assert_eq!(decide(Some(&p), &release("o2"), 0), Ok(vec![]));

        let p = run(Some(p), &restock("o2"), 0).unwrap();
        assert_eq!(levels(&p), (5, 5, 0, 0));
        assert_eq!(decide(Some(&p), &restock("o2"), 0), Ok(vec![]));
        // Restock only undoes a sale, not a mere reservation.
        let p = run(Some(p), &reserve("o3", "cy", 1, 0), 0).unwrap();
        assert_eq!(decide(Some(&p), &restock("o3"), 0), Ok(vec![]));
        // Unknown products: nothing to give back.
        assert_eq!(decide(None, &release("o1"), 0), Ok(vec![]));
        assert_eq!(decide(None, &commit("o1"), 0), Ok(vec![]));
        assert_eq!(decide(None, &restock("o1"), 0), Ok(vec![]));
    }

    #[test]
    fn sale_window_quantity_and_user_limit() {
        let p = run(Some(product(10)), &open_sale(100, 200, 4, 2), 0).unwrap();
        assert_eq!(
            decide(Some(&p), &reserve("o1", "ann", 1, 99), 150),
            Err(Rejection::SaleNotOpen { opens_at: 100 })
        );
        assert_eq!(
            decide(Some(&p), &reserve("o1", "ann", 1, 200), 150),
            Err(Rejection::SaleClosed { closes_at: 200 })
        );
        let p = run(Some(p), &reserve("o1", "ann", 2, 100), 150).unwrap();
        assert_eq!(
            decide(Some(&p), &reserve("o2", "ann", 1, 150), 150),
            Err(Rejection::UserLimit {
                limit: 2,
                already: 2,
                requested: 1
            })
        );
        let p = run(Some(p), &reserve("o3", "bob", 2, 199), 150).unwrap();
        assert_eq!(
            decide(Some(&p), &reserve("o4", "cy", 1, 150), 150),
            Err(Rejection::SaleSoldOut {
                requested: 1,
                remaining: 0
            })
        );
        // Giving units back frees the sale and the user's count.
        let p = run(Some(p), &release("o1"), 150).unwrap();
        let sale = p.sale.as_ref().unwrap();
        assert_eq!((sale.taken, p.user_count("ann")), (2, 0));
        let p = run(Some(p), &commit("o3"), 150).unwrap();
        assert_eq!(p.sale.as_ref().unwrap().taken, 2);
        let p = run(Some(p), &restock("o3"), 150).unwrap();
        let sale = p.sale.as_ref().unwrap();
        assert_eq!((sale.taken, p.user_count("bob")), (0, 0));
        assert!(p.0.buyers.is_empty());
        let view = p.to_view(&ViewMeta::default());
        assert_eq!(view.sale.unwrap().taken, 0);
    }

    #[test]
    fn sale_plus_stock_shortage() {
        let p = run(Some(product(1)), &open_sale(0, 10, 5, 5), 0).unwrap();
        assert_eq!(
            rejected(Some(&p), &reserve("o1", "ann", 2, 5), 5),
            "OUT_OF_STOCK"
        );
    }

    #[test]
    fn open_sale_validates_and_amends_or_renews() {
        let p = product(10);
        assert_eq!(rejected(Some(&p), &open_sale(10, 10, 1, 1), 0), "INVALID");
        assert_eq!(rejected(Some(&p), &open_sale(0, 10, 0, 1), 0), "INVALID");
        assert_eq!(rejected(Some(&p), &open_sale(0, 10, 1, 0), 0), "INVALID");
        assert_eq!(rejected(None, &open_sale(0, 10, 1, 1), 0), "NOT_FOUND");

        let p = run(Some(p), &open_sale(0, 100, 5, 3), 0).unwrap();
        let p = run(Some(p), &reserve("o1", "ann", 3, 10), 10).unwrap();
        // Amending a running sale keeps its counters, and cannot drop below them.
        assert_eq!(rejected(Some(&p), &open_sale(0, 100, 2, 3), 20), "INVALID");
        assert_eq!(rejected(Some(&p), &open_sale(0, 100, 5, 2), 20), "INVALID");
        let p = run(Some(p), &open_sale(0, 150, 6, 3), 20).unwrap();
        let sale = p.sale.clone().unwrap();
        assert_eq!((sale.epoch, sale.taken, sale.terms.quantity), (1, 3, 6));

        // After it closed, a new sale starts from zero, and the old sale's reservation, once
        // released, does not free units of the new one.
        let p = run(Some(p), &open_sale(200, 300, 2, 1), 160).unwrap();
        let sale = p.sale.clone().unwrap();
        assert_eq!((sale.epoch, sale.taken), (2, 0));
        let p = run(Some(p), &reserve("o2", "bob", 1, 250), 250).unwrap();
        let p = run(Some(p), &release("o1"), 260).unwrap();
        assert_eq!(p.sale.as_ref().unwrap().taken, 1);
        assert_eq!(levels(&p), (10, 9, 1, 0));
    }

    fn close_sale() -> StockCommand {
        StockCommand::CloseSale {
            product_id: P.into(),
        }
    }
    fn set_sale_quantity(quantity: u64) -> StockCommand {
        StockCommand::SetSaleQuantity {
            product_id: P.into(),
            quantity,
        }
    }
    fn delete_sale() -> StockCommand {
        StockCommand::DeleteSale {
            product_id: P.into(),
        }
    }

    #[test]
    fn a_reserve_after_an_early_close_is_refused_and_taken_units_stay() {
        let p = run(Some(product(10)), &open_sale(0, 1_000, 5, 3), 0).unwrap();
        let p = run(Some(p), &reserve("o1", "ann", 2, 10), 10).unwrap();
        let p = run(Some(p), &close_sale(), 20).unwrap();
        let sale = p.sale.clone().unwrap();
        assert_eq!((sale.closed_at, sale.taken), (Some(20), 2));
        assert_eq!(p.user_count("ann"), 2);
        // Refused even for an order placed before the close: nothing more is reserved.
        assert_eq!(
            decide(Some(&p), &reserve("o2", "bob", 1, 15), 30),
            Err(Rejection::SaleClosed { closes_at: 20 })
        );
        // Closing again changes nothing; the taken units can still be paid and given back.
        assert_eq!(decide(Some(&p), &close_sale(), 40), Ok(vec![]));
        let p = run(Some(p), &commit("o1"), 50).unwrap();
        assert_eq!(levels(&p), (10, 8, 0, 2));
        let p = run(Some(p), &restock("o1"), 60).unwrap();
        assert_eq!(
            (p.sale.as_ref().unwrap().taken, p.user_count("ann")),
            (0, 0)
        );
        // A closed sale cannot be amended; OpenSale starts the next one from zero.
        assert_eq!(
            rejected(Some(&p), &set_sale_quantity(9), 70),
            "INVALID_TRANSITION"
        );
        let p = run(Some(p), &open_sale(100, 200, 4, 2), 70).unwrap();
        let sale = p.sale.clone().unwrap();
        assert_eq!((sale.epoch, sale.taken, sale.closed_at), (2, 0, None));
        // Without a sale there is nothing to close.
        assert_eq!(rejected(Some(&product(1)), &close_sale(), 0), "NOT_FOUND");
    }

    #[test]
    fn the_sale_quantity_never_goes_below_what_is_taken() {
        let p = run(Some(product(10)), &open_sale(0, 1_000, 5, 3), 0).unwrap();
        let p = run(Some(p), &reserve("o1", "ann", 3, 10), 10).unwrap();
        assert_eq!(rejected(Some(&p), &set_sale_quantity(2), 20), "INVALID");
        assert_eq!(rejected(Some(&p), &set_sale_quantity(0), 20), "INVALID");
        assert_eq!(decide(Some(&p), &set_sale_quantity(5), 20), Ok(vec![]));
        // Down to exactly what is taken: sold out, and the next Reserve says so.
        let p = run(Some(p), &set_sale_quantity(3), 20).unwrap();
        assert_eq!(p.sale.as_ref().unwrap().terms.quantity, 3);
        assert_eq!(
            decide(Some(&p), &reserve("o2", "bob", 1, 30), 30),
            Err(Rejection::SaleSoldOut {
                requested: 1,
                remaining: 0
            })
        );
        let p = run(Some(p), &set_sale_quantity(8), 40).unwrap();
        let p = run(Some(p), &reserve("o2", "bob", 3, 50), 50).unwrap();
        assert_eq!(p.sale.as_ref().unwrap().taken, 6);
        assert_eq!(
            rejected(Some(&product(1)), &set_sale_quantity(1), 0),
            "NOT_FOUND"
        );
        // A sale over by time is not amended either.
        assert_eq!(
            rejected(Some(&p), &set_sale_quantity(9), 1_000),
            "INVALID_TRANSITION"
        );
    }

    #[test]
    fn a_sale_is_deleted_only_before_it_opens() {
        let p = run(Some(product(10)), &open_sale(100, 200, 5, 3), 0).unwrap();
        assert_eq!(
            rejected(Some(&p), &delete_sale(), 100),
            "INVALID_TRANSITION"
        );
        assert_eq!(
            rejected(Some(&p), &delete_sale(), 150),
            "INVALID_TRANSITION"
        );
        let p = run(Some(p), &delete_sale(), 99).unwrap();
        assert_eq!((p.sale.clone(), p.last_sale_epoch), (None, 1));
        assert_eq!(p.to_view(&ViewMeta::default()).sale, None);
        // A repeat is a no-op; with no sale, reserving is an ordinary purchase.
        assert_eq!(decide(Some(&p), &delete_sale(), 99), Ok(vec![]));
        let p = run(Some(p), &reserve("o1", "ann", 4, 120), 120).unwrap();
        assert_eq!(levels(&p), (10, 6, 4, 0));
        // The next sale gets a new epoch: nothing of the deleted one can count in it.
        let p = run(Some(p), &open_sale(300, 400, 2, 1), 130).unwrap();
        assert_eq!(p.sale.as_ref().unwrap().epoch, 2);
        // The epoch survives the stored value's JSON.
        let json = serde_json::to_string(&*p).unwrap();
        let back: ProductState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.last_sale_epoch, 1);
    }

    #[test]
    fn a_value_written_before_sale_administration_reads_as_not_closed() {
        let p = run(Some(product(10)), &open_sale(0, 100, 5, 3), 0).unwrap();
        let mut json = serde_json::to_value(&*p).unwrap();
        assert!(json["sale"].get("closed_at").is_none());
        assert!(json.get("last_sale_epoch").is_none());
        json["sale"].as_object_mut().unwrap().remove("closed_at");
        let back: ProductState = serde_json::from_value(json).unwrap();
        assert_eq!(back.sale.as_ref().unwrap().closed_at, None);
        assert_eq!(back.last_sale_epoch, 0);
        // An old view (no epoch, no closed_at) still reads.
        let old = serde_json::json!({"terms": {"opens_at": 0, "closes_at": 1, "quantity": 1,
            "per_user_limit": 1}, "taken": 0});
        let status: SaleStatus = serde_json::from_value(old).unwrap();
        assert_eq!((status.epoch, status.closed_at), (0, None));
    }

    #[test]
    fn take_changes_name_each_buyer_whose_count_moved() {
        let p = run(Some(product(10)), &open_sale(0, 1_000, 5, 3), 0).unwrap();
        let before = p.0.clone();
        let p = run(Some(p), &reserve("o1", "ann", 2, 10), 10).unwrap();
        assert_eq!(
            ProductSlice::take_changes(&before, &p.0),
            vec![("ann".to_string(), 1, 2)]
        );
        let before = p.0.clone();
        let p = run(Some(p), &release("o1"), 20).unwrap();
        assert_eq!(
            ProductSlice::take_changes(&before, &p.0),
            vec![("ann".to_string(), 1, 0)]
        );
        // Commit moves no counter; a product without a sale has none.
        let p = run(Some(p), &reserve("o2", "bob", 1, 30), 30).unwrap();
        let before = p.0.clone();
        let p = run(Some(p), &commit("o2"), 40).unwrap();
        assert!(ProductSlice::take_changes(&before, &p.0).is_empty());
        let plain = product(3);
        assert!(ProductSlice::take_changes(&plain.0, &plain.0).is_empty());
    }

    #[test]
    fn availability_hides_the_numbers_behind_three_states() {
        use Availability::*;
        assert_eq!(availability(0, 100), SoldOut);
        assert_eq!(availability(-1, 0), SoldOut);
        assert_eq!(availability(5, 1_000), Low);
        assert_eq!(availability(6, 50), InStock);
        // A tenth of what was offered is low even when it is many units.
        assert_eq!(availability(100, 1_000), Low);
        assert_eq!(availability(101, 1_000), InStock);
        let levels = StockLevels {
            initial: 0,
            added: 20,
            available: 6,
            reserved: 4,
            sold: 10,
        };
        assert_eq!(stock_availability(&levels), InStock);

        let sale = SaleStatus {
            terms: SaleTerms {
                opens_at: 100,
                closes_at: 200,
                quantity: 10,
                per_user_limit: 2,
            },
            taken: 4,
            epoch: 1,
            closed_at: None,
        };
        // Six left in the sale, but the stock holds six too: the smaller counts.
        assert_eq!(sale_remaining(&sale, &levels), 6);
        assert_eq!(sale_availability(&sale, &levels), InStock);
        let short = StockLevels {
            available: 2,
            ..levels.clone()
        };
        assert_eq!(sale_availability(&sale, &short), Low);
        assert_eq!(sale_state(&sale, &levels, 99), SaleState::Upcoming);
        assert_eq!(sale_state(&sale, &levels, 100), SaleState::Open);
        assert_eq!(sale_state(&sale, &levels, 200), SaleState::Closed);
        let gone = StockLevels {
            available: 0,
            ..levels.clone()
        };
        assert_eq!(sale_state(&sale, &gone, 150), SaleState::SoldOut);
        let closed = SaleStatus {
            closed_at: Some(120),
            ..sale.clone()
        };
        assert_eq!(sale_state(&closed, &levels, 110), SaleState::Closed);
        assert_eq!(sale_state(&closed, &levels, 50), SaleState::Closed);
    }

    #[test]
    fn reservation_before_a_sale_does_not_count_in_it() {
        let p = run(Some(product(10)), &reserve("o1", "ann", 3, 0), 0).unwrap();
        let p = run(Some(p), &open_sale(0, 100, 2, 1), 0).unwrap();
        let p = run(Some(p), &release("o1"), 0).unwrap();
        assert_eq!(p.sale.as_ref().unwrap().taken, 0);
    }

    #[test]
    fn reserve_replies() {
        let p = product(2);
        let cmd = reserve("o1", "ann", 2, 0);
        let events = decide(Some(&p), &cmd, 0).unwrap();
        let p = events.iter().fold(Some(p), apply).unwrap();
        let reply = reserve_reply(Some(&p), P, "o1", None);
        assert_eq!(
            reply,
            OrderReply::StockReserved {
                order_id: "o1".into(),
                product_id: P.into(),
                quantity: 2,
                unit_price: 1200,
                vendor_id: "v1".into()
            }
        );
        // Redelivered Reserve: no fact, same answer.
        assert!(decide(Some(&p), &cmd, 0).unwrap().is_empty());
        assert_eq!(reserve_reply(Some(&p), P, "o1", None), reply);

        let err = decide(Some(&p), &reserve("o2", "bob", 1, 0), 0).unwrap_err();
        match reserve_reply(Some(&p), P, "o2", Some(&err)) {
            OrderReply::StockRejected { reason, .. } => assert!(reason.contains("out of stock")),
            other => panic!("{other:?}"),
        }
        let p = run(Some(p), &release("o1"), 0).unwrap();
        assert!(matches!(
            reserve_reply(Some(&p), P, "o1", None),
            OrderReply::StockRejected { .. }
        ));
        assert!(matches!(
            reserve_reply(None, P, "o1", None),
            OrderReply::StockRejected { .. }
        ));
    }

    fn publish(public: bool) -> StockCommand {
        StockCommand::UpdateProduct {
            product_id: P.into(),
            name: None,
            description: None,
            price: None,
            image_url: None,
            public: Some(public),
        }
    }

    /// The reason the saga hears for a refused Reserve (what the order's view shows).
    fn refusal(p: Option<&Whole>, cmd: &StockCommand) -> String {
        let StockCommand::Reserve { order_id, .. } = cmd else {
            panic!("{cmd:?}")
        };
        let err = decide(p, cmd, 0).unwrap_err();
        match reserve_reply(p, P, order_id, Some(&err)) {
            OrderReply::StockRejected { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_private_product_is_not_for_sale_and_reads_as_no_product_at_all() {
        let private = run(Some(product(5)), &publish(false), 0).unwrap();
        assert!(!private.public);
        let cmd = reserve("o1", "ann", 1, 0);
        assert_eq!(rejected(Some(&private), &cmd, 0), "NOT_FOUND");
        // The buyer hears what they would of a product that does not exist.
        let unknown = refusal(None, &cmd);
        assert_eq!(unknown, "not found: no such product");
        assert_eq!(refusal(Some(&private), &cmd), unknown);
        // Before any other check: a bad quantity, or the product's deletion, tells nothing more.
        assert_eq!(
            refusal(Some(&private), &reserve("o1", "ann", 0, 0)),
            refusal(None, &reserve("o1", "ann", 0, 0))
        );
        let deleted = run(
            Some(private.clone()),
            &StockCommand::DeleteProduct {
                product_id: P.into(),
            },
            1,
        )
        .unwrap();
        assert_eq!(refusal(Some(&deleted), &cmd), unknown);
        assert_eq!(levels(&private), (5, 5, 0, 0), "nothing taken");

        // Made public, it sells; made private again, what was reserved finishes as usual and a
        // redelivered Reserve of it is answered as before, but a new order is refused.
        let p = run(Some(private), &publish(true), 2).unwrap();
        let p = run(Some(p), &cmd, 2).unwrap();
        let p = run(Some(p), &publish(false), 3).unwrap();
        assert!(decide(Some(&p), &cmd, 3).unwrap().is_empty());
        assert!(matches!(
            reserve_reply(Some(&p), P, "o1", None),
            OrderReply::StockReserved { quantity: 1, .. }
        ));
        assert_eq!(refusal(Some(&p), &reserve("o2", "bob", 1, 0)), unknown);
        let p = run(Some(p), &commit("o1"), 4).unwrap();
        assert_eq!(levels(&p), (5, 4, 0, 1));
        let p = run(Some(p), &restock("o1"), 5).unwrap();
        assert_eq!(levels(&p), (5, 5, 0, 0));
    }

    #[test]
    fn a_deleted_product_is_refused_with_its_reason() {
        let p = run(
            Some(product(5)),
            &StockCommand::DeleteProduct {
                product_id: P.into(),
            },
            1,
        )
        .unwrap();
        assert_eq!(
            refusal(Some(&p), &reserve("o1", "ann", 1, 0)),
            "not found: the product was deleted"
        );
    }

    #[test]
    fn a_created_product_is_listed_under_its_vendor_once() {
        let out = Product.handle(ProductSlice::default(), &create(), 0);
        assert_eq!(
            out.effects,
            vec![StockEffect::Vendor(VendorCommand::ProductListed {
                vendor_id: "v1".into(),
                product_id: P.into(),
            })]
        );
        // A redelivered create changes nothing and lists nothing again.
        let again = Product.handle(out.state.clone(), &create(), 0);
        assert!(again.facts.is_empty() && again.effects.is_empty());
        for cmd in [add(3), publish(false), set(1)] {
            let out = Product.handle(out.state.clone(), &cmd, 0);
            assert!(out.effects.is_empty(), "{cmd:?}: {:?}", out.effects);
        }
    }

    #[test]
    fn a_reserve_is_answered_whatever_it_did_and_nothing_else_is() {
        let out = Product.handle(product(2).0, &reserve("o1", "ann", 2, 0), 0);
        assert!(
            matches!(
                &out.effects[..],
                [StockEffect::Reply(OrderReply::StockReserved {
                    quantity: 2,
                    ..
                })]
            ),
            "{:?}",
            out.effects
        );
        let again = Product.handle(out.state.clone(), &reserve("o1", "ann", 2, 0), 0);
        assert!(again.facts.is_empty());
        assert_eq!(again.effects, out.effects);
        let refused = Product.handle(out.state.clone(), &reserve("o2", "bob", 1, 0), 0);
        assert_eq!(
            refused.rejection.as_ref().map(Rejection::code),
            Some("OUT_OF_STOCK")
        );
        assert!(
            matches!(
                &refused.effects[..],
                [StockEffect::Reply(OrderReply::StockRejected { .. })]
            ),
            "{:?}",
            refused.effects
        );
        let added = Product.handle(out.state, &add(1), 0);
        assert_eq!(added.facts.len(), 1);
        assert!(added.effects.is_empty());
    }

    #[test]
    fn view_and_storage_round_trip() {
        let p = run(Some(product(3)), &reserve("o1", "ann", 1, 0), 0).unwrap();
        let json = serde_json::to_string(&*p).unwrap();
        assert_eq!(serde_json::from_str::<ProductState>(&json).unwrap(), *p);
        // Defaults are left out to keep stored values small.
        assert!(!json.contains("deleted") && !json.contains("sale\""));
        // The reservation lives under a key of its own, not in the product's value.
        assert!(
            !json.contains("reservations") && !json.contains("o1"),
            "{json}"
        );
        let meta = ViewMeta {
            version: 7,
            updated_at: 42,
            rejection: Some("x".into()),
        };
        let v = p.to_view(&meta);
        assert_eq!(
            (v.version, v.updated_at, v.rejection.as_deref()),
            (7, 42, Some("x"))
        );
        assert_eq!(v.stock, p.stock);
        assert_eq!((v.product_id.as_str(), v.vendor_id.as_str()), (P, "v1"));
        for e in [
            StockFact::ProductDeleted,
            StockFact::StockAdjusted { delta: -2 },
        ] {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<StockFact>(&json).unwrap(), e);
        }
    }

    #[test]
    fn the_product_value_does_not_grow_with_orders() {
        let mut p = run(Some(product(100)), &open_sale(0, 1_000_000, 100_000, 50), 0).unwrap();
        let size = |p: &Whole| serde_json::to_vec(&**p).unwrap().len();
        let mut sizes = Vec::new();
        for i in 0..3_000 {
            let order = format!("order-{i:06}");
            p = run(
                Some(p),
                &reserve(&order, &format!("user{}", i % 300), 1, 10),
                10,
            )
            .unwrap();
            let finish = if i % 2 == 0 {
                release(&order)
            } else {
                commit(&order)
            };
            p = run(Some(p), &finish, 10).unwrap();
            if i % 2 == 1 {
                p = run(Some(p), &add(1), 10).unwrap();
            }
            sizes.push(size(&p));
        }
        // Only the digits of the counters grow: the value is the same size after 10 orders as
        // after 3,000, while the old value carried ~93 bytes per reservation.
        let (first, last) = (sizes[9], *sizes.last().unwrap());
        assert!(last <= first + 12, "{first} -> {last} bytes");
        assert!(last < 400, "{last} bytes");
        // Everything else is in the entries the app keeps under their own keys.
        assert_eq!(p.0.reservations.len(), 3_000);
        assert_eq!(p.0.buyers.len(), 150, "the buyers who kept their unit");
        assert_eq!(levels(&p), (1_600, 100, 0, 1_500));
    }

    #[test]
    fn a_value_written_before_the_split_gives_up_its_entries() {
        // A value as the stock app stored it before issue #18: every reservation and the sale's
        // counters inline.
        let old = r#"{"product_id":"p1","vendor_id":"v1","name":"Mug","description":"a mug",
            "price":1200,"public":true,
            "stock":{"initial":0,"added":10,"available":5,"reserved":2,"sold":3},
            "reservations":{
                "o1":{"quantity":2,"username":"ann","unit_price":1200,"status":"RESERVED","sale":1},
                "o2":{"quantity":3,"username":"bob","unit_price":1100,"status":"COMMITTED","sale":1},
                "o3":{"quantity":1,"username":"ann","unit_price":1200,"status":"RELEASED","sale":1},
                "o4":{"quantity":1,"username":"cy","unit_price":1000,"status":"RESTOCKED"}},
            "sale":{"terms":{"opens_at":0,"closes_at":100,"quantity":6,"per_user_limit":3},
                "epoch":1,"taken":5,"per_user":{"ann":2,"bob":3}}}"#;
        let mut state: ProductState = serde_json::from_str(old).unwrap();
        let legacy = state.split_legacy();
        assert_eq!(legacy.reservations.len(), 4);
        assert_eq!(
            legacy.reservations["o2"].status,
            ReservationStatus::Committed
        );
        assert_eq!(
            legacy.buyers,
            BTreeMap::from([("ann".to_string(), 2), ("bob".to_string(), 3)])
        );
        // The slim value keeps levels, terms and counters, and nothing of the entries.
        let slim = serde_json::to_string(&state).unwrap();
        assert!(
            !slim.contains("reservations") && !slim.contains(r#""per_user":"#),
            "{slim}"
        );
        assert!(slim.contains(r#""taken":5"#) && slim.contains(r#""sold":3"#));
        assert!(state.split_legacy().is_empty(), "split once");

        // Split, it decides as the old value did.
        let p = Whole(ProductSlice {
            state: Some(state),
            reservations: legacy.reservations,
            buyers: legacy.buyers,
        });
        assert_eq!(decide(Some(&p), &reserve("o3", "ann", 1, 5), 5), Ok(vec![]));
        assert_eq!(
            decide(Some(&p), &reserve("o5", "bob", 1, 5), 5),
            Err(Rejection::UserLimit {
                limit: 3,
                already: 3,
                requested: 1
            })
        );
        let p = run(Some(p), &release("o1"), 5).unwrap();
        assert_eq!(
            (p.sale.as_ref().unwrap().taken, p.user_count("ann")),
            (3, 0)
        );
        let p = run(Some(p), &restock("o2"), 5).unwrap();
        assert_eq!(levels(&p), (10, 10, 0, 0));
        assert!(p.0.buyers.is_empty());
    }

    #[test]
    fn a_command_names_the_entries_it_touches() {
        let p = run(Some(product(10)), &reserve("o0", "zed", 1, 0), 0).unwrap();
        let p = run(Some(p), &open_sale(0, 100, 6, 3), 0).unwrap();
        let p = run(Some(p), &reserve("o1", "ann", 2, 5), 5).unwrap();
        let s = &p.0;
        assert_eq!(order_of(&reserve("o9", "bob", 1, 5)), Some("o9"));
        assert_eq!(order_of(&add(1)), None);
        // Reserve: the buyer's counter, while there is a sale.
        assert_eq!(s.buyer_of(&reserve("o9", "bob", 1, 5)), Some("bob"));
        // Release and Restock: the counter of the reservation's buyer, if it holds units of
        // the current sale; Commit moves no counter.
        assert_eq!(s.buyer_of(&release("o1")), Some("ann"));
        assert_eq!(s.buyer_of(&restock("o1")), Some("ann"));
        assert_eq!(s.buyer_of(&commit("o1")), None);
        assert_eq!(s.buyer_of(&release("o0")), None, "reserved before the sale");
        assert_eq!(s.buyer_of(&release("nobody")), None);
        let before_sale = product(1);
        assert_eq!(before_sale.0.buyer_of(&reserve("o9", "bob", 1, 5)), None);
        // Every counter only to lower a running sale's limit.
        assert!(s.needs_every_buyer(&open_sale(0, 100, 6, 2), 50));
        assert!(!s.needs_every_buyer(&open_sale(0, 100, 6, 3), 50));
        assert!(
            !s.needs_every_buyer(&open_sale(0, 100, 6, 2), 100),
            "over: a new sale"
        );
        assert!(!s.needs_every_buyer(&add(1), 50));
    }

    #[test]
    fn final_reservations_are_released_or_restocked() {
        use ReservationStatus::*;
        let finals: Vec<_> = [Reserved, Committed, Released, Restocked]
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(finals, vec![Released, Restocked]);
        // A final reservation answers every command like no reservation at all, except a
        // redelivered Reserve, which it keeps from taking the stock again.
        let p = run(Some(product(5)), &reserve("o1", "ann", 2, 0), 0).unwrap();
        let p = run(Some(p), &release("o1"), 0).unwrap();
        let mut forgotten = p.clone();
        forgotten.0.reservations.clear();
        for cmd in [release("o1"), commit("o1"), restock("o1")] {
            assert_eq!(decide(Some(&p), &cmd, 0), decide(Some(&forgotten), &cmd, 0));
        }
        assert_eq!(decide(Some(&p), &reserve("o1", "ann", 2, 0), 0), Ok(vec![]));
        assert_eq!(
            decide(Some(&forgotten), &reserve("o1", "ann", 2, 0), 0)
                .unwrap()
                .len(),
            1
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Add(u64),
            Set(u64),
            Reserve {
                order: u8,
                user: u8,
                qty: u64,
                at: Millis,
            },
            Release(u8),
            Commit(u8),
            Restock(u8),
            OpenSale {
                closes_at: Millis,
                qty: u64,
                limit: u64,
            },
            CloseSale,
            SaleQuantity(u64),
            DeleteSale,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                1 => (1u64..5).prop_map(Op::Add),
                1 => (0u64..8).prop_map(Op::Set),
                3 => (0u8..6, 0u8..3, 1u64..4, -10i64..120)
                    .prop_map(|(order, user, qty, at)| Op::Reserve { order, user, qty, at }),
                2 => (0u8..6).prop_map(Op::Release),
                2 => (0u8..6).prop_map(Op::Commit),
                1 => (0u8..6).prop_map(Op::Restock),
                1 => (prop_oneof![Just(50i64), Just(100i64)], 1u64..8, 1u64..4)
                    .prop_map(|(closes_at, qty, limit)| Op::OpenSale { closes_at, qty, limit }),
                1 => Just(Op::CloseSale),
                1 => (1u64..8).prop_map(Op::SaleQuantity),
                1 => Just(Op::DeleteSale),
            ]
        }

        fn command(op: &Op) -> StockCommand {
            let order = |o: &u8| format!("o{o}");
            match op {
                Op::Add(q) => add(*q),
                Op::Set(q) => set(*q),
                Op::Reserve {
                    order: o,
                    user,
                    qty,
                    at,
                } => reserve(&order(o), &format!("u{user}"), *qty, *at),
                Op::Release(o) => release(&order(o)),
                Op::Commit(o) => commit(&order(o)),
                Op::Restock(o) => restock(&order(o)),
                Op::OpenSale {
                    closes_at,
                    qty,
                    limit,
                } => open_sale(0, *closes_at, *qty, *limit),
                Op::CloseSale => close_sale(),
                Op::SaleQuantity(q) => set_sale_quantity(*q),
                Op::DeleteSale => delete_sale(),
            }
        }

        /// The sale counters must equal what the reservations of the current epoch hold.
        fn counters_match_reservations(p: &Whole) -> Result<(), String> {
            let Some(sale) = &p.sale else { return Ok(()) };
            let mut per_user: BTreeMap<String, u64> = BTreeMap::new();
            for r in p.0.reservations.values() {
                if r.status.holds_units() && r.sale == Some(sale.epoch) {
                    *per_user.entry(r.username.clone()).or_default() += r.quantity;
                }
            }
            let taken: u64 = per_user.values().sum();
            if taken != sale.taken || per_user != p.0.buyers {
                return Err(format!("counters {sale:?} vs reservations {per_user:?}"));
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn invariants_hold_for_any_sequence(
                with_sale in any::<bool>(),
                ops in prop::collection::vec(op(), 1..40),
            ) {
                let mut state = Some(product(3));
                if with_sale {
                    state = run(state, &open_sale(0, 100, 5, 2), 0);
                }
                for (i, op) in ops.iter().enumerate() {
                    let now = i as Millis * 5;
                    let cmd = command(op);
                    if let Ok(events) = decide(state.as_ref(), &cmd, now) {
                        state = events.iter().fold(state, apply);
                    }
                    let p = state.as_ref().unwrap();
                    prop_assert_eq!(p.0.check_invariants(), Ok(()), "after {:?}", op);
                    prop_assert_eq!(counters_match_reservations(p), Ok(()), "after {:?}", op);
                    let held: i64 = p.0.reservations.values()
                        .filter(|r| r.status == ReservationStatus::Reserved)
                        .map(|r| r.quantity as i64).sum();
                    prop_assert_eq!(held, p.stock.reserved);
                }
            }
        }

        /// What the app loads for a command: the product's value and, of the entries under
        /// their own keys, only those the command names.
        fn partial(whole: &ProductSlice, cmd: &StockCommand, now: Millis) -> ProductSlice {
            let mut part = ProductSlice::new(whole.state.clone());
            if let Some(order) = order_of(cmd) {
                if let Some(r) = whole.reservations.get(order) {
                    part.reservations.insert(order.to_string(), r.clone());
                }
            }
            if part.needs_every_buyer(cmd, now) {
                part.buyers = whole.buyers.clone();
            } else if let Some(buyer) = part.buyer_of(cmd) {
                if let Some(n) = whole.buyers.get(buyer) {
                    part.buyers.insert(buyer.to_string(), *n);
                }
            }
            part
        }

        fn epoch(p: &ProductSlice) -> Option<u32> {
            p.state.as_ref()?.sale.as_ref().map(|s| s.epoch)
        }

        /// What the app writes back: the value, the entries that changed, and the counters
        /// of a sale that is no longer the current one left behind (they are read no more).
        fn write_back(whole: &mut ProductSlice, before: &ProductSlice, after: &ProductSlice) {
            whole.state = after.state.clone();
            for (order, r) in &after.reservations {
                if before.reservations.get(order) != Some(r) {
                    whole.reservations.insert(order.clone(), r.clone());
                }
            }
            if epoch(before) != epoch(after) {
                whole.buyers.clear();
            }
            for (buyer, n) in &after.buyers {
                whole.buyers.insert(buyer.clone(), *n);
            }
            for buyer in before.buyers.keys() {
                if !after.buyers.contains_key(buyer) {
                    whole.buyers.remove(buyer);
                }
            }
        }

        proptest! {
            #[test]
            fn a_partial_slice_decides_like_the_whole_product(
                with_sale in any::<bool>(),
                ops in prop::collection::vec(op(), 1..60),
            ) {
                let mut whole = product(3).0;
                if with_sale {
                    whole = run(Some(Whole(whole)), &open_sale(0, 100, 5, 2), 0).unwrap().0;
                }
                let mut stored = whole.clone();
                for (i, op) in ops.iter().enumerate() {
                    let now = i as Millis * 5;
                    let cmd = command(op);
                    let part = partial(&stored, &cmd, now);
                    let decided = Product.decide(&part, &cmd, now);
                    prop_assert_eq!(&decided, &Product.decide(&whole, &cmd, now), "{:?}", op);
                    if let Ok(events) = decided {
                        let after = events.iter().fold(part.clone(), Product::apply);
                        prop_assert_eq!(after.check_invariants(), Ok(()), "after {:?}", op);
                        write_back(&mut stored, &part, &after);
                        whole = events.iter().fold(whole, Product::apply);
                    }
                    prop_assert_eq!(&stored, &whole, "after {:?}", op);
                }
            }
        }
    }
}
