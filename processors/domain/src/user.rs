//! Users (keyed by normalized username) and the e-mail registry (keyed by lower-case e-mail).
//!
//! Uniqueness of both without a lock: the user-commands partition owning a username is its only
//! writer, and the email-claims partition owning an address is the only one deciding who holds
//! it ([`crate::email`]). A sign-up therefore waits (PENDING) for the registry's answer, which
//! comes back to the user as an `EmailClaimed` or `EmailTaken` command.
//!
//! An address goes to the registry only once it is confirmed: a sign-up (or an e-mail change)
//! carries a secret code, which the notification app mails to the address (`user-events`), and
//! `ConfirmEmail` must bring it back within [`CONFIRMATION_TTL_MS`]. So a sign-up's answer is
//! the same whether its address is free or not; only the address's reader, after confirming,
//! learns that it is in use. An unconfirmed sign-up holds its name until the code expires.

use pickple_schemas::{EmailClaim, Millis, Role, UserCommand, UserEvent, UserStatus, UserView};
use serde::{Deserialize, Serialize};

pub use crate::rules::non_empty;
use crate::{Aggregate, Rejection, ViewMeta};

pub const EMAIL_IN_USE: &str = "e-mail already in use";
pub const USERNAME_TAKEN: &str = "username already taken";
pub const WRONG_CODE: &str = "wrong confirmation code";

/// How long a mailed confirmation code works: a day.
pub const CONFIRMATION_TTL_MS: Millis = 24 * 60 * 60 * 1000;

/// An address waiting for its code: the sign-up's `email` while PENDING, else `pending_email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub code: String,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    pub username: String,
    /// Immutable identity (UUID), fixed at sign-up; empty for accounts older than it.
    #[serde(default)]
    pub user_id: String,
    /// Moves on whenever every token issued so far must stop working.
    #[serde(default)]
    pub token_version: u64,
    pub nickname: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub status: UserStatus,
    /// A new address waiting for the registry; `email` stays the old one until it is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_email: Option<String>,
    /// Why the sign-up or the last e-mail change was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The code the new address must send back before it goes to the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<Confirmation>,
}

/// What happened to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserFact {
    SignedUp {
        username: String,
        #[serde(default)]
        user_id: String,
        nickname: String,
        email: String,
        password_hash: String,
        role: Role,
        /// Empty for the bootstrap MASTER, whose address is not mailed.
        #[serde(default)]
        confirmation_code: String,
        #[serde(default)]
        confirm_by: Millis,
    },
    /// The code came back: the address awaiting it goes to the registry.
    EmailConfirmed,
    Activated,
    SignUpRejected {
        reason: String,
    },
    ProfileUpdated {
        nickname: Option<String>,
        password_hash: Option<String>,
    },
    EmailChangeRequested {
        email: String,
        #[serde(default)]
        confirmation_code: String,
        #[serde(default)]
        confirm_by: Millis,
    },
    EmailChanged {
        old: String,
        new: String,
    },
    EmailChangeRejected {
        email: String,
        reason: String,
    },
    /// The registry granted an address this user no longer wants (deleted, or changed again).
    StaleEmailReleased {
        email: String,
    },
    Deleted,
    RoleChanged {
        role: Role,
    },
    /// Every token issued so far is void (sign-out everywhere).
    TokensRevoked,
}

/// A record for the e-mail registry (topic `email-claims`, keyed by the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEffect {
    ClaimEmail {
        email: String,
    },
    ReleaseEmail {
        email: String,
    },
    /// Mail a confirmation code (topic `user-events`).
    Notify(UserEvent),
}

impl UserEffect {
    /// The record for the e-mail registry, keyed by the address; `None` for a mail.
    pub fn to_claim(&self, username: &str) -> Option<(String, EmailClaim)> {
        let username = username.to_string();
        match self {
            UserEffect::ClaimEmail { email } => Some((
                email.clone(),
                EmailClaim::Claim {
                    email: email.clone(),
                    username,
                },
            )),
            UserEffect::ReleaseEmail { email } => Some((
                email.clone(),
                EmailClaim::Release {
                    email: email.clone(),
                    username,
                },
            )),
            UserEffect::Notify(_) => None,
        }
    }
}

/// The key of a user: trimmed and lower-case, so "Ann" and "ann" are one user.
pub fn normalize_username(username: &str) -> String {
    username.trim().to_lowercase()
}

pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks an already normalized username.
pub fn validate_username(username: &str) -> Result<(), Rejection> {
    let ok = (4..=10).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            "username must be 4 to 10 characters of a-z and 0-9",
        ))
    }
}

/// A deliberately loose check (one '@', something before it, a dot inside the domain): the
/// registry and a confirmation mail are the real test of an address.
pub fn validate_email(email: &str) -> Result<(), Rejection> {
    let bad = || Rejection::invalid(format!("'{email}' is not an e-mail address"));
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let dot_inside = domain
        .find('.')
        .is_some_and(|i| i > 0 && !domain.ends_with('.'));
    if local.is_empty()
        || domain.contains('@')
        || !dot_inside
        || email.contains(char::is_whitespace)
    {
        return Err(bad());
    }
    Ok(())
}

/// Whether an account in `status` holds its username against a new sign-up at `now`. A
/// deleted one does, for good: its orders, vendors and notifications are linked by the name. A
/// rejected sign-up does not, nor a pending one whose code expired unconfirmed (`confirm_by`).
pub fn holds_name(status: UserStatus, confirm_by: Option<Millis>, now: Millis) -> bool {
    match status {
        UserStatus::Pending => confirm_by.is_none_or(|by| now <= by),
        UserStatus::Active | UserStatus::Deleted => true,
        UserStatus::Rejected => false,
    }
}

/// Until when a pending sign-up may be confirmed (`None` once confirmed, or not pending).
pub fn confirm_by(u: &UserState) -> Option<Millis> {
    match (u.status, &u.confirmation) {
        (UserStatus::Pending, Some(c)) => Some(c.expires_at),
        _ => None,
    }
}

/// Whether an account may be named a vendor's manager: an active VENDOR_MANAGER or MASTER.
/// Links are by username, and only an account that is or was active holds its name for good
/// ([`holds_name`]), so a vendor can never pass to a later sign-up under a free name.
pub fn check_can_manage_vendors(user: Option<(UserStatus, Role)>) -> Result<(), Rejection> {
    match user {
        Some((UserStatus::Active, Role::VendorManager | Role::Master)) => Ok(()),
        Some((UserStatus::Active, Role::User)) => {
            Err(Rejection::invalid("this account is not a vendor manager"))
        }
        _ => Err(Rejection::invalid("no active account of that name")),
    }
}

/// Only USER and VENDOR_MANAGER accounts sign up.
pub fn check_sign_up_role(role: Role) -> Result<(), Rejection> {
    if role == Role::Master {
        return Err(Rejection::forbidden(
            "MASTER accounts only come from the bootstrap configuration",
        ));
    }
    Ok(())
}

/// What the users app hands the rules.
#[derive(Debug, Clone, PartialEq)]
pub enum UserInput {
    /// A command from `user-commands`. `actor_role` is the role of whoever sent it, as the app
    /// knows it (`None` for the registry's answers); only ChangeRole looks at it.
    Command {
        command: UserCommand,
        actor_role: Option<Role>,
    },
    /// Create the MASTER account of the configuration. A no-op when it already exists as such,
    /// so the app may ask on every start.
    BootstrapMaster {
        username: String,
        user_id: String,
        email: String,
        password_hash: String,
    },
}

/// The rules of users.
#[derive(Debug, Clone, Copy, Default)]
pub struct User;

impl Aggregate for User {
    type State = Option<UserState>;
    type Input = UserInput;
    type Fact = UserFact;
    type Effect = UserEffect;

    fn decide(
        &self,
        state: &Option<UserState>,
        input: &UserInput,
        now: Millis,
    ) -> Result<Vec<UserFact>, Rejection> {
        match input {
            UserInput::Command {
                command,
                actor_role,
            } => decide_command(state.as_ref(), command, *actor_role, now),
            UserInput::BootstrapMaster {
                username,
                user_id,
                email,
                password_hash,
            } => bootstrap_master(state.as_ref(), username, user_id, email, password_hash),
        }
    }

    /// `SignedUp` (re)creates the user: a rejected username is free again, under a new
    /// identity (a deleted one never is, see `decide`).
    fn apply(state: Option<UserState>, fact: &UserFact) -> Option<UserState> {
        if let UserFact::SignedUp {
            username,
            user_id,
            nickname,
            email,
            password_hash,
            role,
            confirmation_code,
            confirm_by,
        } = fact
        {
            return Some(UserState {
                username: username.clone(),
                user_id: user_id.clone(),
                // Past the version of any token an earlier account under this name held.
                token_version: state.map_or(0, |old| old.token_version + 1),
                nickname: nickname.clone(),
                email: email.clone(),
                password_hash: password_hash.clone(),
                role: *role,
                status: UserStatus::Pending,
                pending_email: None,
                refused: None,
                confirmation: (!confirmation_code.is_empty()).then(|| Confirmation {
                    code: confirmation_code.clone(),
                    expires_at: *confirm_by,
                }),
            });
        }
        let mut u = state?;
        u.apply(fact);
        Some(u)
    }

    /// The e-mail registry records a fact calls for.
    fn effects(
        before: &Option<UserState>,
        fact: &UserFact,
        after: &Option<UserState>,
    ) -> Vec<UserEffect> {
        let Some(after) = after else {
            return Vec::new();
        };
        let before = before.as_ref();
        let mail = |email: &str, sign_up: bool| match &after.confirmation {
            Some(c) => UserEffect::Notify(UserEvent::ConfirmationRequested {
                username: after.username.clone(),
                user_id: after.user_id.clone(),
                email: email.to_string(),
                code: c.code.clone(),
                sign_up,
                expires_at: c.expires_at,
            }),
            // The bootstrap MASTER: nobody to confirm, straight to the registry.
            None => UserEffect::ClaimEmail {
                email: email.to_string(),
            },
        };
        match fact {
            UserFact::SignedUp { email, .. } => vec![mail(email, true)],
            UserFact::EmailChangeRequested { email, .. } => vec![mail(email, false)],
            UserFact::EmailConfirmed => {
                let email = match after.status {
                    UserStatus::Pending => Some(after.email.clone()),
                    _ => after.pending_email.clone(),
                };
                email
                    .map(|email| UserEffect::ClaimEmail { email })
                    .into_iter()
                    .collect()
            }
            UserFact::EmailChanged { old, .. } => {
                vec![UserEffect::ReleaseEmail { email: old.clone() }]
            }
            UserFact::StaleEmailReleased { email } => vec![UserEffect::ReleaseEmail {
                email: email.clone(),
            }],
            UserFact::Deleted => {
                let b = before.unwrap_or(after);
                // A confirmed pending change's claim may already be granted: give that address
                // back too (an unconfirmed one never went to the registry).
                std::iter::once(b.email.clone())
                    .chain(b.pending_email.clone().filter(|_| b.confirmation.is_none()))
                    .map(|email| UserEffect::ReleaseEmail { email })
                    .collect()
            }
            _ => vec![],
        }
    }
}

fn decide_command(
    state: Option<&UserState>,
    cmd: &UserCommand,
    actor_role: Option<Role>,
    now: Millis,
) -> Result<Vec<UserFact>, Rejection> {
    match cmd {
        UserCommand::SignUp {
            username,
            user_id,
            nickname,
            email,
            password_hash,
            role,
            confirmation_code,
        } => {
            let username = normalize_username(username);
            let email = normalize_email(email);
            validate_username(&username)?;
            non_empty("nickname", nickname)?;
            crate::rules::visible_text("nickname", nickname, false)?;
            validate_email(&email)?;
            non_empty("password", password_hash)?;
            non_empty("confirmation code", confirmation_code)?;
            check_sign_up_role(*role)?;
            let signed_up = UserFact::SignedUp {
                username,
                user_id: user_id.clone(),
                nickname: nickname.trim().to_string(),
                email,
                password_hash: password_hash.clone(),
                role: *role,
                confirmation_code: confirmation_code.clone(),
                confirm_by: now.saturating_add(CONFIRMATION_TTL_MS),
            };
            match state {
                // A redelivered sign-up is not a second user.
                Some(u) if u.status == UserStatus::Pending && u.user_id == *user_id => Ok(vec![]),
                Some(u) if holds_name(u.status, confirm_by(u), now) => {
                    Err(Rejection::conflict(USERNAME_TAKEN))
                }
                _ => Ok(vec![signed_up]),
            }
        }
        UserCommand::ConfirmEmail { code, .. } => {
            let Some(u) = state else {
                return Err(Rejection::not_found("no such user"));
            };
            let awaiting = match u.status {
                UserStatus::Pending | UserStatus::Active => u.confirmation.as_ref(),
                _ => None,
            };
            match awaiting {
                Some(c) if c.code != *code => Err(Rejection::invalid(WRONG_CODE)),
                Some(c) if now > c.expires_at => Err(Rejection::transition(
                    "the confirmation code expired: sign up (or change the address) again",
                )),
                Some(_) => Ok(vec![UserFact::EmailConfirmed]),
                // Confirmed already; the registry's answer is on its way.
                None if u.status == UserStatus::Pending
                    || (u.status == UserStatus::Active && u.pending_email.is_some()) =>
                {
                    Ok(vec![])
                }
                None => Err(Rejection::transition("no address is waiting for a code")),
            }
        }
        UserCommand::EmailClaimed { email, .. } => {
            let email = normalize_email(email);
            let Some(u) = state else { return Ok(vec![]) };
            let confirmed = u.confirmation.is_none();
            Ok(match u.status {
                UserStatus::Pending if confirmed && u.email == email => vec![UserFact::Activated],
                UserStatus::Active
                    if confirmed && u.pending_email.as_deref() == Some(email.as_str()) =>
                {
                    vec![UserFact::EmailChanged {
                        old: u.email.clone(),
                        new: email,
                    }]
                }
                UserStatus::Active if u.email == email => vec![],
                _ => vec![UserFact::StaleEmailReleased { email }],
            })
        }
        UserCommand::EmailTaken { email, .. } => {
            let email = normalize_email(email);
            let Some(u) = state else { return Ok(vec![]) };
            let confirmed = u.confirmation.is_none();
            // Told only now, to whoever confirmed: the address's own reader.
            Ok(match u.status {
                UserStatus::Pending if confirmed && u.email == email => {
                    vec![UserFact::SignUpRejected {
                        reason: EMAIL_IN_USE.into(),
                    }]
                }
                UserStatus::Active
                    if confirmed && u.pending_email.as_deref() == Some(email.as_str()) =>
                {
                    vec![UserFact::EmailChangeRejected {
                        email,
                        reason: EMAIL_IN_USE.into(),
                    }]
                }
                _ => vec![],
            })
        }
        UserCommand::UpdateProfile {
            username,
            by,
            nickname,
            email,
            password_hash,
            confirmation_code,
        } => {
            let u = active(state)?;
            if administered(username, by.as_deref()) && password_hash.is_some() {
                // A password is chosen by its account alone (an administrator who could set it
                // could sign in as the account); a MASTER's change of someone's address still
                // waits for the code mailed to the new address, like the account's own.
                return Err(Rejection::forbidden(
                    "only the account itself sets its password",
                ));
            }
            if let Some(n) = nickname {
                non_empty("nickname", n)?;
                crate::rules::visible_text("nickname", n, false)?;
            }
            if let Some(p) = password_hash {
                non_empty("password", p)?;
            }
            let email = email.as_deref().map(normalize_email);
            if let Some(e) = &email {
                validate_email(e)?;
            }
            let nickname = nickname
                .as_deref()
                .map(str::trim)
                .filter(|n| *n != u.nickname)
                .map(String::from);
            let password_hash = password_hash.clone().filter(|p| *p != u.password_hash);
            let mut facts = Vec::new();
            if nickname.is_some() || password_hash.is_some() {
                facts.push(UserFact::ProfileUpdated {
                    nickname,
                    password_hash,
                });
            }
            if let Some(e) = email {
                if e != u.email && u.pending_email.as_ref() != Some(&e) {
                    let code = confirmation_code.clone().unwrap_or_default();
                    non_empty("confirmation code", &code)?;
                    facts.push(UserFact::EmailChangeRequested {
                        email: e,
                        confirmation_code: code,
                        confirm_by: now.saturating_add(CONFIRMATION_TTL_MS),
                    });
                }
            }
            Ok(facts)
        }
        UserCommand::DeleteUser { username, by } => match state.map(|u| u.status) {
            Some(UserStatus::Deleted) => Ok(vec![]),
            _ => {
                let u = active(state)?;
                if administered(username, by.as_deref()) && u.role == Role::Master {
                    // A MASTER is removed by another only once demoted, and nobody demotes
                    // themself (ChangeRole), so the administration never loses its last MASTER
                    // this way; a MASTER may still delete their own account (`/users/me`).
                    return Err(Rejection::forbidden(
                        "a MASTER account is not deleted by another: change its role first",
                    ));
                }
                Ok(vec![UserFact::Deleted])
            }
        },
        UserCommand::RevokeTokens { .. } => {
            active(state)?;
            Ok(vec![UserFact::TokensRevoked])
        }
        UserCommand::ChangeRole { role, by, .. } => {
            if actor_role != Some(Role::Master) {
                return Err(Rejection::forbidden("only a MASTER may change roles"));
            }
            let u = active(state)?;
            if normalize_username(by) == u.username
                && u.role == Role::Master
                && *role != Role::Master
            {
                // Otherwise the last MASTER could lock everyone out of administration.
                return Err(Rejection::invalid("a MASTER cannot demote themself"));
            }
            Ok(if u.role == *role {
                vec![]
            } else {
                vec![UserFact::RoleChanged { role: *role }]
            })
        }
    }
}

/// Whether a command on `username` comes from another account (a MASTER administering it).
fn administered(username: &str, by: Option<&str>) -> bool {
    by.is_some_and(|by| normalize_username(by) != normalize_username(username))
}

fn active(state: Option<&UserState>) -> Result<&UserState, Rejection> {
    match state {
        Some(u) if u.status == UserStatus::Active => Ok(u),
        Some(u) if u.status == UserStatus::Pending => Err(Rejection::transition(
            "the sign-up is still waiting for its e-mail confirmation",
        )),
        _ => Err(Rejection::not_found("no such user")),
    }
}

fn bootstrap_master(
    state: Option<&UserState>,
    username: &str,
    user_id: &str,
    email: &str,
    password_hash: &str,
) -> Result<Vec<UserFact>, Rejection> {
    let username = normalize_username(username);
    let email = normalize_email(email);
    validate_username(&username)?;
    validate_email(&email)?;
    non_empty("password", password_hash)?;
    match state {
        Some(u) if u.status == UserStatus::Active && u.role == Role::Master => Ok(vec![]),
        Some(u) if matches!(u.status, UserStatus::Pending | UserStatus::Active) => Err(
            Rejection::conflict(format!("{username} exists and is not a MASTER")),
        ),
        _ => Ok(vec![
            UserFact::SignedUp {
                nickname: username.clone(),
                username,
                user_id: user_id.to_string(),
                email,
                password_hash: password_hash.to_string(),
                role: Role::Master,
                confirmation_code: String::new(),
                confirm_by: 0,
            },
            UserFact::Activated,
        ]),
    }
}

impl UserState {
    fn apply(&mut self, fact: &UserFact) {
        match fact {
            UserFact::SignedUp { .. } | UserFact::StaleEmailReleased { .. } => {}
            UserFact::EmailConfirmed => self.confirmation = None,
            UserFact::Activated => self.status = UserStatus::Active,
            UserFact::SignUpRejected { reason } => {
                self.status = UserStatus::Rejected;
                self.refused = Some(reason.clone());
            }
            UserFact::ProfileUpdated {
                nickname,
                password_hash,
            } => {
                if let Some(n) = nickname {
                    self.nickname = n.clone();
                }
                if let Some(p) = password_hash {
                    self.password_hash = p.clone();
                    self.token_version += 1;
                }
            }
            UserFact::EmailChangeRequested {
                email,
                confirmation_code,
                confirm_by,
            } => {
                self.pending_email = Some(email.clone());
                self.confirmation = Some(Confirmation {
                    code: confirmation_code.clone(),
                    expires_at: *confirm_by,
                });
                self.refused = None;
            }
            UserFact::EmailChanged { new, .. } => {
                self.email = new.clone();
                self.pending_email = None;
            }
            UserFact::EmailChangeRejected { reason, .. } => {
                self.pending_email = None;
                self.refused = Some(reason.clone());
            }
            UserFact::Deleted => {
                self.status = UserStatus::Deleted;
                self.pending_email = None;
                self.confirmation = None;
                self.token_version += 1;
            }
            UserFact::RoleChanged { role } => {
                self.role = *role;
                self.token_version += 1;
            }
            UserFact::TokensRevoked => self.token_version += 1,
        }
    }

    pub fn to_view(&self, meta: &ViewMeta) -> UserView {
        UserView {
            username: self.username.clone(),
            user_id: self.user_id.clone(),
            token_version: self.token_version,
            nickname: self.nickname.clone(),
            email: self.email.clone(),
            password_hash: self.password_hash.clone(),
            role: self.role,
            status: self.status,
            pending_email: self.pending_email.clone(),
            confirm_by: confirm_by(self),
            rejection: meta.rejection.clone().or_else(|| self.refused.clone()),
            updated_at: meta.updated_at,
            version: meta.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_up(username: &str, email: &str, role: Role) -> UserCommand {
        sign_up_as(username, "id-1", email, role)
    }
    fn sign_up_as(username: &str, user_id: &str, email: &str, role: Role) -> UserCommand {
        UserCommand::SignUp {
            username: username.into(),
            user_id: user_id.into(),
            nickname: "Ann".into(),
            email: email.into(),
            password_hash: "$argon2id$x".into(),
            role,
            confirmation_code: format!("code-{user_id}"),
        }
    }
    fn confirm_as(username: &str, code: &str) -> UserCommand {
        UserCommand::ConfirmEmail {
            username: username.into(),
            code: code.into(),
        }
    }
    fn confirm(code: &str) -> UserCommand {
        confirm_as("ann1", code)
    }
    fn mail(email: &str, code: &str, sign_up: bool) -> UserEffect {
        UserEffect::Notify(UserEvent::ConfirmationRequested {
            username: "ann1".into(),
            user_id: "id-1".into(),
            email: email.into(),
            code: code.into(),
            sign_up,
            expires_at: CONFIRMATION_TTL_MS,
        })
    }
    fn claimed(email: &str) -> UserCommand {
        UserCommand::EmailClaimed {
            username: "ann1".into(),
            email: email.into(),
        }
    }
    fn taken(email: &str) -> UserCommand {
        UserCommand::EmailTaken {
            username: "ann1".into(),
            email: email.into(),
        }
    }
    fn update(nickname: Option<&str>, email: Option<&str>) -> UserCommand {
        UserCommand::UpdateProfile {
            username: "ann1".into(),
            by: None,
            nickname: nickname.map(String::from),
            email: email.map(String::from),
            password_hash: None,
            confirmation_code: email.map(|_| "code-new".into()),
        }
    }
    fn change_role(role: Role, by: &str) -> UserCommand {
        UserCommand::ChangeRole {
            username: "ann1".into(),
            role,
            by: by.into(),
        }
    }
    fn delete() -> UserCommand {
        UserCommand::DeleteUser {
            username: "ann1".into(),
            by: None,
        }
    }
    fn claim(email: &str) -> UserEffect {
        UserEffect::ClaimEmail {
            email: email.into(),
        }
    }
    fn release(email: &str) -> UserEffect {
        UserEffect::ReleaseEmail {
            email: email.into(),
        }
    }

    fn command(cmd: UserCommand, actor: Option<Role>) -> UserInput {
        UserInput::Command {
            command: cmd,
            actor_role: actor,
        }
    }
    fn bootstrap(
        state: Option<&UserState>,
        username: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<Vec<UserFact>, Rejection> {
        let input = UserInput::BootstrapMaster {
            username: username.into(),
            user_id: "id-master".into(),
            email: email.into(),
            password_hash: password_hash.into(),
        };
        User.decide(&state.cloned(), &input, 0)
    }
    fn decide(
        state: Option<&UserState>,
        cmd: &UserCommand,
        actor: Option<Role>,
    ) -> Result<Vec<UserFact>, Rejection> {
        User.decide(&state.cloned(), &command(cmd.clone(), actor), 0)
    }

    fn run(state: &mut Option<UserState>, input: UserInput) -> Vec<UserEffect> {
        let out = User.handle(state.take(), &input, 0);
        if let Some(r) = out.rejection {
            panic!("{input:?}: {r}");
        }
        *state = out.state;
        out.effects
    }
    fn step(
        state: &mut Option<UserState>,
        cmd: UserCommand,
        actor: Option<Role>,
    ) -> Vec<UserEffect> {
        run(state, command(cmd, actor))
    }

    fn code(state: &Option<UserState>, cmd: UserCommand, actor: Option<Role>) -> &'static str {
        decide(state.as_ref(), &cmd, actor).unwrap_err().code()
    }

    fn active_ann() -> Option<UserState> {
        let mut s = None;
        step(&mut s, sign_up("Ann1", "Ann@Example.com", Role::User), None);
        step(&mut s, confirm("code-id-1"), None);
        step(&mut s, claimed("ann@example.com"), None);
        s
    }

    #[test]
    fn sign_up_mails_a_code_and_claims_the_address_only_once_confirmed() {
        let mut s = None;
        let out = step(
            &mut s,
            sign_up(" Ann1 ", "Ann@Example.com", Role::User),
            None,
        );
        // Nothing goes to the registry yet, so nothing about the address can come back to the
        // signer: whether it is in use or not, a sign-up ends the same way here.
        assert_eq!(out, vec![mail("ann@example.com", "code-id-1", true)]);
        assert_eq!(
            s.as_ref().unwrap().to_view(&ViewMeta::default()).confirm_by,
            Some(CONFIRMATION_TTL_MS)
        );
        assert_eq!(code(&s, confirm("guess"), None), "INVALID");
        assert!(
            !decide(s.as_ref(), &claimed("ann@example.com"), None)
                .unwrap()
                .contains(&UserFact::Activated),
            "an unconfirmed address is not the registry's to grant"
        );
        assert_eq!(
            step(&mut s, confirm("code-id-1"), None),
            vec![claim("ann@example.com")]
        );
        assert_eq!(step(&mut s, confirm("code-id-1"), None), vec![], "a repeat");
        let u = s.clone().unwrap();
        assert_eq!(
            (u.username.as_str(), u.status),
            ("ann1", UserStatus::Pending)
        );
        // Redelivered sign-up (the same identity): nothing new. Another sign-up for the same
        // name: conflict.
        assert_eq!(
            decide(
                s.as_ref(),
                &sign_up("ann1", "ann@example.com", Role::User),
                None
            ),
            Ok(vec![])
        );
        assert_eq!(
            code(
                &s,
                sign_up_as("ann1", "id-2", "z@example.com", Role::User),
                None
            ),
            "CONFLICT"
        );
        assert_eq!(step(&mut s, claimed("ann@example.com"), None), vec![]);
        assert_eq!(s.as_ref().unwrap().status, UserStatus::Active);
        assert_eq!(
            code(&s, sign_up("ann1", "ann@example.com", Role::User), None),
            "CONFLICT"
        );
        // Duplicate answer.
        assert_eq!(step(&mut s, claimed("ann@example.com"), None), vec![]);
    }

    #[test]
    fn a_taken_email_rejects_the_confirmed_sign_up_and_frees_the_name() {
        let mut s = None;
        step(
            &mut s,
            sign_up("ann1", "ann@example.com", Role::VendorManager),
            None,
        );
        step(&mut s, confirm("code-id-1"), None);
        step(&mut s, taken("ann@example.com"), None);
        let u = s.clone().unwrap();
        assert_eq!(u.status, UserStatus::Rejected);
        let v = u.to_view(&ViewMeta::default());
        assert_eq!(v.rejection.as_deref(), Some(EMAIL_IN_USE));
        let out = step(
            &mut s,
            sign_up("ann1", "other@example.com", Role::User),
            None,
        );
        assert_eq!(out, vec![mail("other@example.com", "code-id-1", true)]);
        assert_eq!(s.unwrap().status, UserStatus::Pending);
    }

    #[test]
    fn an_unconfirmed_sign_up_holds_its_name_until_its_code_expires() {
        let at = |s: &Option<UserState>, cmd: UserCommand, now: Millis| {
            User.decide(s, &command(cmd, None), now)
        };
        let mut s = None;
        step(&mut s, sign_up("ann1", "ann@example.com", Role::User), None);
        let late = CONFIRMATION_TTL_MS + 1;
        let other = sign_up_as("ann1", "id-2", "z@example.com", Role::User);
        assert_eq!(
            at(&s, other.clone(), CONFIRMATION_TTL_MS)
                .unwrap_err()
                .code(),
            "CONFLICT"
        );
        assert_eq!(
            at(&s, confirm("code-id-1"), late).unwrap_err().code(),
            "INVALID_TRANSITION"
        );
        let facts = at(&s, other, late).unwrap();
        assert!(matches!(&facts[..], [UserFact::SignedUp { user_id, .. }] if user_id == "id-2"));
        let u = s.unwrap();
        assert!(holds_name(u.status, confirm_by(&u), CONFIRMATION_TTL_MS));
        assert!(!holds_name(u.status, confirm_by(&u), late));
    }

    #[test]
    fn sign_up_validation() {
        let none = None;
        for name in ["abc", "abcdefghijk", "ann_1", "änn1", ""] {
            assert_eq!(
                code(&none, sign_up(name, "a@b.co", Role::User), None),
                "INVALID",
                "{name}"
            );
        }
        for email in [
            "ab.co", "a@b", "a@@b.co", "@b.co", "a@.co", "a@b.", "a@b@c.co", "a b@c.co",
        ] {
            assert_eq!(
                code(&none, sign_up("ann1", email, Role::User), None),
                "INVALID",
                "{email}"
            );
        }
        assert!(decide(None, &sign_up("ABCD1234", "a@b.co", Role::User), None).is_ok());
        assert_eq!(
            code(&none, sign_up("ann1", "a@b.co", Role::Master), None),
            "FORBIDDEN"
        );
        let no_nick = UserCommand::SignUp {
            username: "ann1".into(),
            user_id: "id-1".into(),
            nickname: " ".into(),
            email: "a@b.co".into(),
            password_hash: "h".into(),
            role: Role::User,
            confirmation_code: "c".into(),
        };
        assert_eq!(code(&none, no_nick, None), "INVALID");
        let mut hidden = sign_up("ann1", "a@b.co", Role::User);
        if let UserCommand::SignUp { nickname, .. } = &mut hidden {
            *nickname = "Ann\u{202e}".into();
        }
        assert_eq!(
            code(&none, hidden, None),
            "INVALID",
            "a right-to-left override"
        );
        let no_hash = UserCommand::SignUp {
            username: "ann1".into(),
            user_id: "id-1".into(),
            nickname: "n".into(),
            email: "a@b.co".into(),
            password_hash: "".into(),
            role: Role::User,
            confirmation_code: "c".into(),
        };
        assert_eq!(code(&none, no_hash, None), "INVALID");
        let mut no_code = sign_up("ann1", "a@b.co", Role::User);
        if let UserCommand::SignUp {
            confirmation_code, ..
        } = &mut no_code
        {
            confirmation_code.clear();
        }
        let no_hash = no_code;
        assert_eq!(code(&none, no_hash, None), "INVALID");
    }

    #[test]
    fn a_deleted_name_is_never_signed_up_again_and_a_rejected_one_gets_a_new_identity() {
        let mut s = active_ann();
        step(
            &mut s,
            UserCommand::DeleteUser {
                username: "ann1".into(),
                by: None,
            },
            None,
        );
        assert_eq!(
            code(&s, sign_up_as("ann1", "id-2", "new@b.co", Role::User), None),
            "CONFLICT",
            "the old account's orders, vendors and notifications are linked by its name"
        );

        let mut s = None;
        step(
            &mut s,
            sign_up_as("bob1", "id-1", "b@b.co", Role::User),
            None,
        );
        step(&mut s, confirm_as("bob1", "code-id-1"), None);
        step(
            &mut s,
            UserCommand::EmailTaken {
                username: "bob1".into(),
                email: "b@b.co".into(),
            },
            None,
        );
        assert_eq!(s.as_ref().unwrap().status, UserStatus::Rejected);
        let rejected_version = s.as_ref().unwrap().token_version;
        step(
            &mut s,
            sign_up_as("bob1", "id-2", "c@b.co", Role::User),
            None,
        );
        let u = s.unwrap();
        assert_eq!(u.user_id, "id-2");
        assert!(
            u.token_version > rejected_version,
            "no token of the first sign-up fits"
        );
    }

    #[test]
    fn tokens_are_voided_by_a_password_change_a_role_change_a_deletion_and_a_revocation() {
        let version = |s: &Option<UserState>| s.as_ref().unwrap().token_version;
        let mut s = active_ann();
        let mut last = version(&s);
        let voiding = [
            (
                UserCommand::UpdateProfile {
                    username: "ann1".into(),
                    by: None,
                    nickname: None,
                    email: None,
                    password_hash: Some("$argon2id$new".into()),
                    confirmation_code: None,
                },
                None,
            ),
            (
                UserCommand::RevokeTokens {
                    username: "ann1".into(),
                },
                None,
            ),
            (
                UserCommand::ChangeRole {
                    username: "ann1".into(),
                    role: Role::VendorManager,
                    by: "root".into(),
                },
                Some(Role::Master),
            ),
            (
                UserCommand::DeleteUser {
                    username: "ann1".into(),
                    by: None,
                },
                None,
            ),
        ];
        for (cmd, actor) in voiding {
            step(&mut s, cmd.clone(), actor);
            assert!(version(&s) > last, "{cmd:?} must void earlier tokens");
            last = version(&s);
        }
        // A nickname change voids nothing.
        let mut s = active_ann();
        let before = version(&s);
        step(
            &mut s,
            UserCommand::UpdateProfile {
                username: "ann1".into(),
                by: None,
                nickname: Some("Annie".into()),
                email: None,
                password_hash: None,
                confirmation_code: None,
            },
            None,
        );
        assert_eq!(version(&s), before);
    }

    #[test]
    fn profile_updates_and_email_change() {
        let mut s = active_ann();
        assert_eq!(step(&mut s, update(Some("Annie"), None), None), vec![]);
        assert_eq!(s.as_ref().unwrap().nickname, "Annie");
        assert_eq!(
            decide(
                s.as_ref(),
                &update(Some("Annie"), Some("ANN@example.com")),
                None
            ),
            Ok(vec![])
        );
        assert_eq!(code(&s, update(Some(""), None), None), "INVALID");
        assert_eq!(code(&s, update(None, Some("nope")), None), "INVALID");

        let out = step(&mut s, update(None, Some("new@example.com")), None);
        assert_eq!(out, vec![mail("new@example.com", "code-new", false)]);
        let u = s.clone().unwrap();
        assert_eq!(
            (u.email.as_str(), u.pending_email.as_deref()),
            ("ann@example.com", Some("new@example.com"))
        );
        let mut no_code = update(None, Some("new2@example.com"));
        if let UserCommand::UpdateProfile {
            confirmation_code, ..
        } = &mut no_code
        {
            *confirmation_code = None;
        }
        assert_eq!(code(&s, no_code, None), "INVALID");
        assert_eq!(code(&s, confirm("code-id-1"), None), "INVALID");
        assert_eq!(
            step(&mut s, confirm("code-new"), None),
            vec![claim("new@example.com")]
        );
        let out = step(&mut s, claimed("new@example.com"), None);
        assert_eq!(out, vec![release("ann@example.com")]);
        let u = s.clone().unwrap();
        assert_eq!(
            (u.email.as_str(), u.pending_email),
            ("new@example.com", None)
        );

        step(&mut s, update(None, Some("x@example.com")), None);
        step(&mut s, confirm("code-new"), None);
        assert_eq!(step(&mut s, taken("x@example.com"), None), vec![]);
        let u = s.clone().unwrap();
        assert_eq!(
            (u.email.as_str(), u.pending_email.as_deref()),
            ("new@example.com", None)
        );
        assert_eq!(
            u.to_view(&ViewMeta::default()).rejection.as_deref(),
            Some(EMAIL_IN_USE)
        );
        // A late grant of an address no longer wanted goes back to the registry.
        assert_eq!(
            step(&mut s, claimed("x@example.com"), None),
            vec![release("x@example.com")]
        );
        assert_eq!(s.unwrap().email, "new@example.com");

        let pass = UserCommand::UpdateProfile {
            username: "ann1".into(),
            by: None,
            nickname: None,
            email: None,
            password_hash: Some("$new".into()),
            confirmation_code: None,
        };
        let mut s = active_ann();
        step(&mut s, pass, None);
        assert_eq!(s.unwrap().password_hash, "$new");
    }

    #[test]
    fn only_active_users_change() {
        let none = None;
        assert_eq!(code(&none, update(Some("x"), None), None), "NOT_FOUND");
        assert_eq!(code(&none, delete(), None), "NOT_FOUND");
        let mut s = None;
        step(&mut s, sign_up("ann1", "ann@example.com", Role::User), None);
        assert_eq!(
            code(&s, update(Some("x"), None), None),
            "INVALID_TRANSITION"
        );
        assert_eq!(code(&s, delete(), None), "INVALID_TRANSITION");
        assert_eq!(
            code(
                &s,
                change_role(Role::VendorManager, "boss"),
                Some(Role::Master)
            ),
            "INVALID_TRANSITION"
        );
    }

    #[test]
    fn delete_releases_the_addresses() {
        // An unconfirmed new address never went to the registry: nothing to give back.
        let mut s = active_ann();
        step(&mut s, update(None, Some("new@example.com")), None);
        assert_eq!(
            step(&mut s, delete(), None),
            vec![release("ann@example.com")]
        );

        let mut s = active_ann();
        step(&mut s, update(None, Some("new@example.com")), None);
        step(&mut s, confirm("code-new"), None);
        let out = step(&mut s, delete(), None);
        assert_eq!(
            out,
            vec![release("ann@example.com"), release("new@example.com")]
        );
        assert_eq!(s.as_ref().unwrap().status, UserStatus::Deleted);
        assert_eq!(step(&mut s, delete(), None), vec![]);
        assert_eq!(code(&s, update(Some("x"), None), None), "NOT_FOUND");
        // The pending change's grant arrives after the delete.
        assert_eq!(
            step(&mut s, claimed("new@example.com"), None),
            vec![release("new@example.com")]
        );
        // The name is not free again: it stays the deleted account's.
        assert_eq!(
            code(
                &s,
                sign_up_as("ann1", "id-2", "ann@example.com", Role::User),
                None
            ),
            "CONFLICT"
        );
    }

    fn by_boss(cmd: UserCommand) -> UserCommand {
        match cmd {
            UserCommand::UpdateProfile {
                username,
                nickname,
                email,
                password_hash,
                confirmation_code,
                ..
            } => UserCommand::UpdateProfile {
                username,
                by: Some("Boss".into()),
                nickname,
                email,
                password_hash,
                confirmation_code,
            },
            UserCommand::DeleteUser { username, .. } => UserCommand::DeleteUser {
                username,
                by: Some("Boss".into()),
            },
            other => other,
        }
    }

    #[test]
    fn a_master_deletes_another_account_as_it_would_itself_and_voids_its_tokens() {
        let mut s = active_ann();
        let before = s.as_ref().unwrap().token_version;
        let out = step(&mut s, by_boss(delete()), None);
        assert_eq!(
            out,
            vec![release("ann@example.com")],
            "the address goes back"
        );
        let u = s.clone().unwrap();
        assert_eq!(u.status, UserStatus::Deleted);
        assert!(
            u.token_version > before,
            "every token of the account is void"
        );
        assert_eq!(step(&mut s, by_boss(delete()), None), vec![], "a repeat");
        assert_eq!(
            code(&s, sign_up_as("ann1", "id-2", "x@b.co", Role::User), None),
            "CONFLICT",
            "the name is never reused"
        );
        // The account itself named in `by` is its own deletion.
        let mut s = active_ann();
        let own = UserCommand::DeleteUser {
            username: "ann1".into(),
            by: Some(" ANN1".into()),
        };
        step(&mut s, own, None);
        assert_eq!(s.unwrap().status, UserStatus::Deleted);
    }

    #[test]
    fn a_master_account_is_deleted_by_another_only_once_demoted() {
        let mut s = active_ann();
        step(
            &mut s,
            change_role(Role::Master, "boss"),
            Some(Role::Master),
        );
        assert_eq!(code(&s, by_boss(delete()), None), "FORBIDDEN");
        assert_eq!(s.as_ref().unwrap().status, UserStatus::Active);
        // Themself: allowed (the route is /users/me).
        let mut own = s.clone();
        step(&mut own, delete(), None);
        assert_eq!(own.unwrap().status, UserStatus::Deleted);
        // Demoted by another MASTER first, then deleted.
        step(&mut s, change_role(Role::User, "boss"), Some(Role::Master));
        step(&mut s, by_boss(delete()), None);
        assert_eq!(s.unwrap().status, UserStatus::Deleted);
    }

    #[test]
    fn a_deleted_configured_master_is_created_again_at_the_next_start() {
        let mut s = None;
        run(
            &mut s,
            UserInput::BootstrapMaster {
                username: "root".into(),
                user_id: "id-root".into(),
                email: "root@pickple.io".into(),
                password_hash: "$h".into(),
            },
        );
        let first = s.as_ref().unwrap().token_version;
        let own = UserCommand::DeleteUser {
            username: "root".into(),
            by: None,
        };
        step(&mut s, own, None);
        let facts = bootstrap(s.as_ref(), "root", "root@pickple.io", "$h").unwrap();
        assert!(facts.contains(&UserFact::Activated), "{facts:?}");
        let u = User::apply(s.clone(), &facts[0]);
        assert!(u.unwrap().token_version > first, "no token of before fits");
    }

    #[test]
    fn a_master_updates_another_profile_but_never_its_password() {
        let mut s = active_ann();
        let version = s.as_ref().unwrap().token_version;
        assert_eq!(
            step(&mut s, by_boss(update(Some("Annie"), None)), None),
            vec![]
        );
        assert_eq!(s.as_ref().unwrap().nickname, "Annie");
        // A new address is the account's only once its reader sends the mailed code back.
        let out = step(&mut s, by_boss(update(None, Some("New@Example.com"))), None);
        assert_eq!(out, vec![mail("new@example.com", "code-new", false)]);
        let u = s.clone().unwrap();
        assert_eq!(
            (u.email.as_str(), u.pending_email.as_deref()),
            ("ann@example.com", Some("new@example.com"))
        );
        let view = u.to_view(&ViewMeta::default());
        assert_eq!(
            (view.email.as_str(), view.pending_email.as_deref()),
            ("ann@example.com", Some("new@example.com")),
            "the view shows the change waiting for its code"
        );
        assert_eq!(
            step(&mut s, confirm("code-new"), None),
            vec![claim("new@example.com")]
        );
        let pass = UserCommand::UpdateProfile {
            username: "ann1".into(),
            by: Some("boss".into()),
            nickname: None,
            email: None,
            password_hash: Some("$argon2id$mine".into()),
            confirmation_code: None,
        };
        assert_eq!(code(&s, pass, None), "FORBIDDEN");
        assert_eq!(
            s.unwrap().token_version,
            version,
            "nothing voided the tokens"
        );
        assert_eq!(
            code(&None, by_boss(update(Some("x"), None)), None),
            "NOT_FOUND"
        );
    }

    #[test]
    fn only_a_master_changes_roles() {
        let mut s = active_ann();
        assert_eq!(
            code(
                &s,
                change_role(Role::VendorManager, "ann1"),
                Some(Role::User)
            ),
            "FORBIDDEN"
        );
        assert_eq!(
            code(&s, change_role(Role::VendorManager, "x"), None),
            "FORBIDDEN"
        );
        step(
            &mut s,
            change_role(Role::VendorManager, "boss"),
            Some(Role::Master),
        );
        assert_eq!(s.as_ref().unwrap().role, Role::VendorManager);
        assert_eq!(
            decide(
                s.as_ref(),
                &change_role(Role::VendorManager, "boss"),
                Some(Role::Master)
            ),
            Ok(vec![])
        );
        step(
            &mut s,
            change_role(Role::Master, "boss"),
            Some(Role::Master),
        );
        assert_eq!(
            code(&s, change_role(Role::User, "ann1"), Some(Role::Master)),
            "INVALID"
        );
        assert_eq!(
            code(&None, change_role(Role::User, "boss"), Some(Role::Master)),
            "NOT_FOUND"
        );
    }

    #[test]
    fn bootstrap_creates_an_active_master_once() {
        let mut s = None;
        let out = run(
            &mut s,
            UserInput::BootstrapMaster {
                username: "Root".into(),
                user_id: "id-root".into(),
                email: "root@pickple.io".into(),
                password_hash: "$h".into(),
            },
        );
        let u = s.clone().unwrap();
        assert_eq!(
            (u.username.as_str(), u.role, u.status),
            ("root", Role::Master, UserStatus::Active)
        );
        assert_eq!(out, vec![claim("root@pickple.io")]);
        assert_eq!(
            bootstrap(s.as_ref(), "root", "root@pickple.io", "$h"),
            Ok(vec![])
        );
        let ann = active_ann();
        assert_eq!(
            bootstrap(ann.as_ref(), "ann1", "a@b.co", "$h")
                .unwrap_err()
                .code(),
            "CONFLICT"
        );
        assert_eq!(
            bootstrap(None, "r", "a@b.co", "$h").unwrap_err().code(),
            "INVALID"
        );
        // The registry's answer to the master's claim changes nothing.
        let u = s.clone();
        let claimed = UserCommand::EmailClaimed {
            username: "root".into(),
            email: "root@pickple.io".into(),
        };
        assert_eq!(step(&mut s, claimed, None), vec![]);
        assert_eq!(s, u);
    }

    #[test]
    fn effects_become_claims_and_state_round_trips() {
        assert_eq!(
            claim("a@b.co").to_claim("ann1"),
            Some((
                "a@b.co".into(),
                EmailClaim::Claim {
                    email: "a@b.co".into(),
                    username: "ann1".into()
                }
            ))
        );
        assert_eq!(
            release("a@b.co").to_claim("ann1").map(|(key, _)| key),
            Some("a@b.co".into())
        );
        assert_eq!(mail("a@b.co", "c", true).to_claim("ann1"), None);
        let u = active_ann().unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert!(!json.contains("pending_email"));
        assert_eq!(serde_json::from_str::<UserState>(&json).unwrap(), u);
        let v = u.to_view(&ViewMeta {
            version: 2,
            updated_at: 9,
            rejection: None,
        });
        assert_eq!(
            (v.version, v.status, v.rejection),
            (2, UserStatus::Active, None)
        );
    }
}
