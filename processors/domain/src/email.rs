//! The e-mail registry, keyed by lower-case address: who holds each address. The email-claims
//! partition owning an address is the only one deciding who holds it, so two users never get
//! the same address, without a lock. Users claim an address on sign-up or on a change of
//! address and release it when they no longer want it; the registry answers each claim back on
//! `user-commands`.

use pickple_schemas::{EmailClaim, Millis, UserCommand};
use serde::{Deserialize, Serialize};

use crate::user::{normalize_email, normalize_username};
use crate::{Aggregate, Rejection};

/// Who holds an address. No entry: the address is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailOwner {
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EmailFact {
    Claimed { username: String },
    Released,
}

/// The registry's rules. Its only records are its answers to claims (keyed by the username).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmailRegistry;

impl Aggregate for EmailRegistry {
    type State = Option<EmailOwner>;
    type Input = EmailClaim;
    type Fact = EmailFact;
    type Effect = UserCommand;

    /// A release by anyone but the holder is ignored, so a late release cannot free an address
    /// someone else now holds.
    fn decide(
        &self,
        state: &Option<EmailOwner>,
        claim: &EmailClaim,
        _now: Millis,
    ) -> Result<Vec<EmailFact>, Rejection> {
        Ok(match (claim, state) {
            (EmailClaim::Claim { username, .. }, None) => vec![EmailFact::Claimed {
                username: normalize_username(username),
            }],
            (EmailClaim::Release { username, .. }, Some(o))
                if o.username == normalize_username(username) =>
            {
                vec![EmailFact::Released]
            }
            _ => vec![],
        })
    }

    /// `None` after a release: the app deletes the key (a compacted tombstone).
    fn apply(_state: Option<EmailOwner>, fact: &EmailFact) -> Option<EmailOwner> {
        match fact {
            EmailFact::Claimed { username } => Some(EmailOwner {
                username: username.clone(),
            }),
            EmailFact::Released => None,
        }
    }

    fn effects(
        _before: &Option<EmailOwner>,
        _fact: &EmailFact,
        _after: &Option<EmailOwner>,
    ) -> Vec<UserCommand> {
        Vec::new()
    }

    /// Every claim is answered, a repeated one by the holder too, so a lost or duplicated answer
    /// cannot leave a user pending. A release is not answered.
    fn answer(
        after: &Option<EmailOwner>,
        claim: &EmailClaim,
        _rejection: Option<&Rejection>,
    ) -> Option<UserCommand> {
        let EmailClaim::Claim { email, username } = claim else {
            return None;
        };
        let email = normalize_email(email);
        let username = normalize_username(username);
        Some(if after.as_ref().is_some_and(|o| o.username == username) {
            UserCommand::EmailClaimed { username, email }
        } else {
            UserCommand::EmailTaken { username, email }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts and the answer of one claim or release, and the holder after it.
    fn run(
        owner: Option<EmailOwner>,
        claim: &EmailClaim,
    ) -> (Vec<EmailFact>, Option<UserCommand>, Option<EmailOwner>) {
        let out = EmailRegistry.handle(owner, claim, 0);
        assert_eq!(out.rejection, None);
        assert!(out.effects.len() <= 1, "{:?}", out.effects);
        (out.facts, out.effects.into_iter().next(), out.state)
    }

    #[test]
    fn registry_claims_and_releases() {
        let claim = |e: &str, u: &str| EmailClaim::Claim {
            email: e.into(),
            username: u.into(),
        };
        let release = |e: &str, u: &str| EmailClaim::Release {
            email: e.into(),
            username: u.into(),
        };
        let (facts, reply, owner) = run(None, &claim("A@b.co", "Ann1"));
        assert_eq!(
            facts,
            vec![EmailFact::Claimed {
                username: "ann1".into()
            }]
        );
        assert_eq!(
            reply,
            Some(UserCommand::EmailClaimed {
                username: "ann1".into(),
                email: "a@b.co".into()
            })
        );
        assert_eq!(
            owner,
            Some(EmailOwner {
                username: "ann1".into()
            })
        );
        // The holder again: same answer, no change.
        let (facts, reply, after) = run(owner.clone(), &claim("a@b.co", "ann1"));
        assert!(facts.is_empty());
        assert!(matches!(reply, Some(UserCommand::EmailClaimed { .. })));
        assert_eq!(after, owner);
        let (facts, reply, _) = run(owner.clone(), &claim("a@b.co", "bob1"));
        assert!(facts.is_empty());
        assert_eq!(
            reply,
            Some(UserCommand::EmailTaken {
                username: "bob1".into(),
                email: "a@b.co".into()
            })
        );
        assert_eq!(
            run(owner.clone(), &release("a@b.co", "bob1")),
            (vec![], None, owner.clone())
        );
        assert_eq!(run(None, &release("a@b.co", "bob1")), (vec![], None, None));
        assert_eq!(
            run(owner, &release("a@b.co", "ann1")),
            (vec![EmailFact::Released], None, None)
        );
    }
}
