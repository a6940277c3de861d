//! The users app: users keyed by normalized username (`user-commands`, which also carries the
//! e-mail registry's answers) and the e-mail registry keyed by lower-case address
//! (`email-claims`). A sign-up (or an e-mail change) sends its confirmation code to
//! `user-events`, for the notification app to mail; once `ConfirmEmail` brings the code back,
//! the address is claimed, and the registry answers `EmailClaimed` or `EmailTaken` back on
//! `user-commands`. Publishes `view-users`.
//!
//! The MASTER account comes from the configuration: the task owning the MASTER's username
//! partition (`partition_for(username, partitions)`, with the input topics' partition count as
//! the app found it at start) creates it in its first punctuation.
//!
//! `ChangeRole` needs the role of its `by`: the app knows it when `by` is the configured MASTER
//! or a user held by the same task; otherwise the command is refused (visible in the view). The
//! gateway only lets a MASTER send it in the first place.

use pickple_domain::email::{EmailOwner, EmailRegistry};
use pickple_domain::user::{self, User, UserEffect, UserInput, UserState};
use pickple_domain::Aggregate;
use pickple_runtime::{partition_for, AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::topic::{EMAIL_CLAIMS, USER_COMMANDS, USER_EVENTS, VIEW_USERS};
use pickple_schemas::{EmailClaim, Role, UserCommand};
use pickple_topics::catalogue::app;

use crate::entity::{self, Entity, Handled};
use crate::state::load;

pub const USERS: &str = "users";
pub const EMAILS: &str = "emails";

const USER: Entity = Entity {
    what: "user",
    store: USERS,
    view: VIEW_USERS,
    updated: "UserUpdated",
    rejected: "UserRejected",
};

pub fn spec() -> AppSpec {
    AppSpec::new(
        app::USERS.name,
        &[USER_COMMANDS, EMAIL_CLAIMS],
        &[USERS, EMAILS],
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub username: String,
    pub email: String,
    pub password_hash: String,
}

pub struct UsersProcessor {
    partition: i32,
    /// The partition count of the app's inputs: which task owns the MASTER's username.
    partitions: i32,
    master: Option<Master>,
    bootstrapped: bool,
}

impl UsersProcessor {
    pub fn new(partition: i32, partitions: i32, master: Option<Master>) -> Self {
        UsersProcessor {
            partition,
            partitions,
            master,
            bootstrapped: false,
        }
    }

    fn actor_role(&self, ctx: &Context<'_>, by: &str) -> Result<Option<Role>, ProcessError> {
        let by = user::normalize_username(by);
        if self
            .master
            .as_ref()
            .is_some_and(|m| user::normalize_username(&m.username) == by)
        {
            return Ok(Some(Role::Master));
        }
        let (u, _) = load::<UserState>(ctx, USERS, &by)?;
        Ok(
            u.filter(|u| u.status == pickple_schemas::UserStatus::Active)
                .map(|u| u.role),
        )
    }

    /// Handle an input for the user under `key`, sending the registry records and the mails
    /// it calls for.
    fn handle(
        ctx: &mut Context<'_>,
        key: &str,
        input: &UserInput,
    ) -> Result<Handled, ProcessError> {
        entity::handle(
            ctx,
            &USER,
            key,
            &User,
            input,
            UserState::to_view,
            |ctx, effect| match effect {
                UserEffect::Notify(event) => ctx.send(USER_EVENTS, key, event),
                claim => {
                    if let Some((email, claim)) = claim.to_claim(key) {
                        ctx.send(EMAIL_CLAIMS, &email, &claim);
                    }
                }
            },
        )
    }

    /// Decide a claim or release of the address under `key` and answer the user.
    fn claim(ctx: &mut Context<'_>, key: &str, claim: &EmailClaim) -> Result<(), ProcessError> {
        let owner: Option<EmailOwner> = ctx.get(EMAILS, key)?;
        let out = EmailRegistry.handle(owner, claim, ctx.now());
        if !out.facts.is_empty() {
            match &out.state {
                Some(o) => ctx.put(EMAILS, key, o),
                None => ctx.delete(EMAILS, key),
            }
        }
        for answer in &out.effects {
            ctx.send(USER_COMMANDS, command_username(answer), answer);
        }
        Ok(())
    }
}

fn command_username(c: &UserCommand) -> &str {
    match c {
        UserCommand::SignUp { username, .. }
        | UserCommand::UpdateProfile { username, .. }
        | UserCommand::DeleteUser { username, .. }
        | UserCommand::ChangeRole { username, .. }
        | UserCommand::RevokeTokens { username }
        | UserCommand::ConfirmEmail { username, .. }
        | UserCommand::EmailClaimed { username, .. }
        | UserCommand::EmailTaken { username, .. } => username,
    }
}

impl Processor for UsersProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let key = record.key_str()?.to_string();
        if record.topic == EMAIL_CLAIMS {
            let claim: EmailClaim = record.decode()?;
            let email = match &claim {
                EmailClaim::Claim { email, .. } | EmailClaim::Release { email, .. } => {
                    user::normalize_email(email)
                }
            };
            if email != key {
                return Err(ProcessError::Invalid(format!(
                    "record key '{key}' is not the claim's address '{email}'"
                )));
            }
            return Self::claim(ctx, &key, &claim);
        }

        let cmd: UserCommand = record.decode()?;
        let username = user::normalize_username(command_username(&cmd));
        if username != key {
            return Err(ProcessError::Invalid(format!(
                "record key '{key}' is not the normalized username '{username}'"
            )));
        }
        let actor_role = match &cmd {
            UserCommand::ChangeRole { by, .. } => self.actor_role(ctx, by)?,
            _ => None,
        };
        let input = UserInput::Command {
            command: cmd,
            actor_role,
        };
        Self::handle(ctx, &key, &input)?;
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        if self.bootstrapped {
            return Ok(());
        }
        self.bootstrapped = true;
        let Some(m) = self.master.clone() else {
            return Ok(());
        };
        let key = user::normalize_username(&m.username);
        if partition_for(key.as_bytes(), self.partitions) != self.partition {
            return Ok(());
        }
        let input = UserInput::BootstrapMaster {
            username: m.username,
            // Used only when the account is created: a no-op bootstrap keeps the first one.
            user_id: uuid::Uuid::new_v4().to_string(),
            email: m.email,
            password_hash: m.password_hash,
        };
        match Self::handle(ctx, &key, &input) {
            Ok(Handled::Unchanged) => {}
            Ok(Handled::Changed) => {
                tracing::info!(username = %key, "MASTER account created from the configuration")
            }
            Ok(Handled::Refused(rejection)) => {
                tracing::error!(username = %key, %rejection, "MASTER bootstrap refused")
            }
            // A configuration the rules refuse, with no account to show it on.
            Err(ProcessError::Invalid(reason)) => {
                tracing::error!(username = %key, %reason, "MASTER bootstrap refused")
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::{UserEvent, UserStatus, UserView};

    fn sign_up(u: &str, email: &str) -> UserCommand {
        UserCommand::SignUp {
            username: u.into(),
            user_id: format!("id-{u}"),
            nickname: "Ann".into(),
            email: email.into(),
            password_hash: "$argon2id$x".into(),
            role: Role::User,
            confirmation_code: format!("c0de-{u}"),
        }
    }

    /// Every code to mail, sent back as the mail's reader would.
    fn confirm_all(d: &mut TestDriver<UsersProcessor>) {
        for UserEvent::ConfirmationRequested { username, code, .. } in d.take(USER_EVENTS) {
            let confirm = UserCommand::ConfirmEmail {
                username: username.clone(),
                code,
            };
            d.pipe(USER_COMMANDS, &username, &confirm).unwrap();
        }
    }

    /// Confirm every address, then feed every registry record and reply the driver produced
    /// back into it (one task holds every key in the driver), until nothing more comes.
    fn settle(d: &mut TestDriver<UsersProcessor>) {
        loop {
            confirm_all(d);
            let claims = d.take_outputs(EMAIL_CLAIMS);
            let replies = d.take_outputs(USER_COMMANDS);
            if claims.is_empty() && replies.is_empty() {
                return;
            }
            for o in claims.into_iter().chain(replies) {
                d.pipe_raw(
                    &o.topic,
                    Some(&o.key),
                    o.value.as_deref(),
                    o.headers.clone(),
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn sign_up_mails_a_code_then_claims_the_address_and_a_second_claim_is_refused() {
        let mut d = TestDriver::new(
            UsersProcessor::new(0, pickple_topics::PARTITIONS, None),
            1_000,
        );
        d.pipe(USER_COMMANDS, "ann1", &sign_up("Ann1", "Ann@X.io"))
            .unwrap();
        assert!(
            d.take_outputs(EMAIL_CLAIMS).is_empty(),
            "not before the code"
        );
        let mails: Vec<UserEvent> = d.take(USER_EVENTS);
        let [UserEvent::ConfirmationRequested {
            username,
            email,
            code,
            sign_up: true,
            ..
        }] = &mails[..]
        else {
            panic!("one sign-up mail: {mails:?}");
        };
        assert_eq!((username.as_str(), email.as_str()), ("ann1", "ann@x.io"));
        let confirm = |code: &str| UserCommand::ConfirmEmail {
            username: "ann1".into(),
            code: code.into(),
        };
        d.pipe(USER_COMMANDS, "ann1", &confirm("bad")).unwrap();
        assert!(d.take_outputs(EMAIL_CLAIMS).is_empty(), "a wrong code");
        d.pipe(USER_COMMANDS, "ann1", &confirm(code)).unwrap();
        let claims = d.take_outputs(EMAIL_CLAIMS);
        assert_eq!(claims[0].key_str(), "ann@x.io");
        for o in claims {
            d.pipe_raw(
                &o.topic,
                Some(&o.key),
                o.value.as_deref(),
                o.headers.clone(),
            )
            .unwrap();
        }
        let replies = d.take_outputs(USER_COMMANDS);
        assert_eq!(replies[0].key_str(), "ann1");
        assert_eq!(replies[0].headers.event_type, "EmailClaimed");
        for o in replies {
            d.pipe_raw(
                &o.topic,
                Some(&o.key),
                o.value.as_deref(),
                o.headers.clone(),
            )
            .unwrap();
        }
        d.pipe(USER_COMMANDS, "bob1", &sign_up("bob1", "ann@x.io"))
            .unwrap();
        settle(&mut d);
        let views: Vec<UserView> = d.take(VIEW_USERS);
        let ann: Vec<&UserView> = views.iter().filter(|v| v.username == "ann1").collect();
        assert_eq!(ann.last().unwrap().status, UserStatus::Active);
        assert!(
            ann.iter().any(|v| v
                .rejection
                .as_deref()
                .is_some_and(|r| r.contains(user::WRONG_CODE))),
            "{ann:?}"
        );
        let bob = views.iter().rfind(|v| v.username == "bob1").unwrap();
        assert_eq!(bob.status, UserStatus::Rejected);
        assert_eq!(bob.rejection.as_deref(), Some(user::EMAIL_IN_USE));
    }

    #[test]
    fn released_addresses_leave_no_entry_and_a_deleted_account_keeps_its_version() {
        let mut d = TestDriver::new(
            UsersProcessor::new(0, pickple_topics::PARTITIONS, None),
            1_000,
        );
        d.pipe(USER_COMMANDS, "ann1", &sign_up("ann1", "ann@x.io"))
            .unwrap();
        settle(&mut d);
        assert!(d.get::<EmailOwner>(EMAILS, "ann@x.io").is_some());
        d.pipe(
            USER_COMMANDS,
            "ann1",
            &UserCommand::UpdateProfile {
                username: "ann1".into(),
                by: None,
                nickname: None,
                email: Some("ann@y.io".into()),
                password_hash: None,
                confirmation_code: Some("c0de-y".into()),
            },
        )
        .unwrap();
        settle(&mut d);
        assert_eq!(d.get::<EmailOwner>(EMAILS, "ann@x.io"), None, "released");
        assert!(d.get::<EmailOwner>(EMAILS, "ann@y.io").is_some());
        d.pipe(
            USER_COMMANDS,
            "ann1",
            &UserCommand::DeleteUser {
                username: "ann1".into(),
                by: None,
            },
        )
        .unwrap();
        settle(&mut d);
        assert_eq!(d.get::<EmailOwner>(EMAILS, "ann@y.io"), None, "released");
        // The deleted account stays: it is the floor of the view's version, which the views
        // sink only lets grow. A new sign-up under the name goes on from it.
        let deleted = d
            .get::<crate::state::Versioned<UserState>>(USERS, "ann1")
            .unwrap();
        assert_eq!(deleted.state.status, pickple_schemas::UserStatus::Deleted);
        d.pipe(USER_COMMANDS, "ann1", &sign_up("ann1", "ann@x.io"))
            .unwrap();
        let view = d.take::<UserView>(VIEW_USERS).pop().unwrap();
        assert_eq!(view.version, deleted.version + 1);
    }

    #[test]
    fn refusals_reach_the_view_and_mis_keyed_commands_the_dlq() {
        let mut d = TestDriver::new(
            UsersProcessor::new(0, pickple_topics::PARTITIONS, None),
            1_000,
        );
        d.pipe(USER_COMMANDS, "Ann1", &sign_up("ann1", "ann@x.io"))
            .unwrap();
        assert_eq!(d.dead_letters().len(), 1);
        d.pipe(USER_COMMANDS, "ann1", &sign_up("ann1", "ann@x.io"))
            .unwrap();
        settle(&mut d);
        d.pipe(
            USER_COMMANDS,
            "ann1",
            &UserCommand::ChangeRole {
                username: "ann1".into(),
                role: Role::VendorManager,
                by: "ann1".into(),
            },
        )
        .unwrap();
        let last = d.take::<UserView>(VIEW_USERS).pop().unwrap();
        assert_eq!(last.version, 4);
        assert!(last.rejection.unwrap().contains("MASTER"));
    }

    /// A configured MASTER the rules refuse (here a username too short) is logged, not fatal:
    /// no account, no dead letter, and the task goes on.
    #[test]
    fn a_master_bootstrap_the_rules_refuse_creates_nothing() {
        let master = Master {
            username: "r".into(),
            email: "root@pickple.local".into(),
            password_hash: "$argon2id$m".into(),
        };
        let owner = partition_for(b"r", pickple_topics::PARTITIONS);
        let mut d = TestDriver::new(
            UsersProcessor::new(owner, pickple_topics::PARTITIONS, Some(master)),
            1_000,
        );
        d.advance(1_000).unwrap();
        assert!(d.take_outputs(VIEW_USERS).is_empty());
        assert!(d.take_outputs(EMAIL_CLAIMS).is_empty());
        assert!(d.dead_letters().is_empty());
        assert!(d
            .get::<crate::state::Versioned<UserState>>(USERS, "r")
            .is_none());
        d.pipe(USER_COMMANDS, "ann1", &sign_up("ann1", "ann@x.io"))
            .unwrap();
        assert_eq!(d.take_outputs(USER_EVENTS).len(), 1);
    }

    #[test]
    fn master_bootstrap_runs_once_on_the_owning_partition() {
        let master = Master {
            username: "root".into(),
            email: "root@pickple.local".into(),
            password_hash: "$argon2id$m".into(),
        };
        let owner = partition_for(b"root", pickple_topics::PARTITIONS);
        let other = (owner + 1) % pickple_topics::PARTITIONS;
        // The driver always runs as partition 0; pretend to be each task.
        let mut d = TestDriver::new(
            UsersProcessor::new(other, pickple_topics::PARTITIONS, Some(master.clone())),
            1_000,
        );
        d.advance(1_000).unwrap();
        assert!(d.take_outputs(VIEW_USERS).is_empty());

        let mut d = TestDriver::new(
            UsersProcessor::new(owner, pickple_topics::PARTITIONS, Some(master.clone())),
            1_000,
        );
        d.advance(1_000).unwrap();
        d.advance(1_000).unwrap();
        let views: Vec<UserView> = d.take(VIEW_USERS);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].role, Role::Master);
        assert_eq!(views[0].status, UserStatus::Active);
        settle(&mut d);
        // The MASTER may now change roles of users of its task.
        d.pipe(USER_COMMANDS, "ann1", &sign_up("ann1", "ann@x.io"))
            .unwrap();
        settle(&mut d);
        d.pipe(
            USER_COMMANDS,
            "ann1",
            &UserCommand::ChangeRole {
                username: "ann1".into(),
                role: Role::VendorManager,
                by: "root".into(),
            },
        )
        .unwrap();
        let last = d.take::<UserView>(VIEW_USERS).pop().unwrap();
        assert_eq!(last.role, Role::VendorManager);
        assert_eq!(last.rejection, None);
    }

    /// After the partitions grew, the MASTER's task is the one its username hashes to among
    /// all of them, not among the first six.
    #[test]
    fn master_bootstrap_follows_the_partition_count() {
        let master = Master {
            username: "alice".into(),
            email: "alice@pickple.local".into(),
            password_hash: "$argon2id$m".into(),
        };
        let (of_6, of_12) = (partition_for(b"alice", 6), partition_for(b"alice", 12));
        assert_ne!(of_6, of_12, "alice moves when 6 partitions become 12");
        let created = |partition: i32| {
            let p = UsersProcessor::new(partition, 12, Some(master.clone()));
            let mut d = TestDriver::new(p, 1_000);
            d.advance(1_000).unwrap();
            !d.take_outputs(VIEW_USERS).is_empty()
        };
        assert!(!created(of_6));
        assert!(created(of_12));
    }
}
