use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;
use crate::message_type;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    User,
    VendorManager,
    Master,
}

/// Topic `user-commands`, key: the normalized (lower-case) username, so one task owns a username.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum UserCommand {
    SignUp {
        username: String,
        /// The account's immutable identity, minted by the gateway (UUID). Tokens carry it, so
        /// a token of one account never works for another under the same name. Empty in
        /// records older than it.
        #[serde(default)]
        user_id: String,
        nickname: String,
        email: String,
        /// argon2 PHC string; the plain password never reaches Kafka.
        password_hash: String,
        role: Role,
        /// The secret mailed to `email` (minted by the gateway): the account becomes ACTIVE only
        /// once it comes back in `ConfirmEmail`, so nobody signs up with an address they cannot
        /// read, and nobody learns from a sign-up whether an address is in use.
        confirmation_code: String,
    },
    UpdateProfile {
        username: String,
        /// Who asks, when it is not the account itself: a MASTER administering it
        /// (`PUT /users/{username}`), which never sets the password. Absent from the account's
        /// own changes and from records older than it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        nickname: Option<String>,
        /// A new address: it replaces the old one once confirmed with the code mailed to it.
        email: Option<String>,
        password_hash: Option<String>,
        /// The secret mailed to the new `email` (with `email` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirmation_code: Option<String>,
    },
    /// The code mailed to a new address came back: the sign-up, or the change to that address,
    /// goes on to the e-mail registry.
    ConfirmEmail { username: String, code: String },
    DeleteUser {
        username: String,
        /// Who asks, when it is not the account itself: a MASTER deleting it
        /// (`DELETE /users/{username}`), which may not delete a MASTER account. Absent from the
        /// account's own deletion and from records older than it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    ChangeRole {
        username: String,
        role: Role,
        by: String,
    },
    /// Sign out everywhere: every access and refresh token issued so far stops working.
    RevokeTokens { username: String },
    /// Reply from the e-mail registry: the address is now held by `username`.
    EmailClaimed { username: String, email: String },
    /// Reply from the e-mail registry: another user holds the address.
    EmailTaken { username: String, email: String },
}
message_type!(UserCommand {
    SignUp,
    UpdateProfile,
    DeleteUser,
    ChangeRole,
    RevokeTokens,
    ConfirmEmail,
    EmailClaimed,
    EmailTaken
});

/// Topic `email-claims`, key: the lower-case e-mail address (one writer per address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum EmailClaim {
    Claim { email: String, username: String },
    Release { email: String, username: String },
}
message_type!(EmailClaim { Claim, Release });

/// Topic `user-events`, key: username. What the notification app mails about an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum UserEvent {
    /// A sign-up or an e-mail change waits for `code` to come back from `email`'s reader before
    /// `expires_at`. The code is a secret: this topic keeps records one day, and no view holds it.
    ConfirmationRequested {
        username: String,
        user_id: String,
        email: String,
        code: String,
        /// Whether a sign-up (else a change of address) is being confirmed.
        sign_up: bool,
        expires_at: Millis,
    },
}
message_type!(UserEvent {
    ConfirmationRequested
});

/// How a confirmation mail carries its code, for the notification app that writes it and the
/// clients (tests, the soak) that read it from a mailbox: a body line `Confirmation code: <code>`,
/// and the Message-ID `<{user_id}.confirm-{expires_at}@{domain}>`.
pub mod confirmation_mail {
    use crate::Millis;

    pub const CODE_LINE: &str = "Confirmation code:";

    /// The Message-ID (without angle brackets) of the mail for a code expiring at `expires_at`.
    pub fn message_id(user_id: &str, expires_at: Millis, domain: &str) -> String {
        format!("{user_id}.confirm-{expires_at}@{domain}")
    }

    /// The expiry in a confirmation mail's Message-ID (with or without angle brackets);
    /// `None` for any other mail.
    pub fn expiry(message_id: &str) -> Option<Millis> {
        let (local, _) = message_id.trim().trim_start_matches('<').split_once('@')?;
        local.rsplit_once(".confirm-")?.1.parse().ok()
    }

    /// The code in a confirmation mail's decoded body.
    pub fn code(body: &str) -> Option<String> {
        let rest = &body[body.find(CODE_LINE)? + CODE_LINE.len()..];
        let code: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        (!code.is_empty()).then_some(code)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_code_and_expiry_read_back_what_is_written() {
            let id = super::message_id("u-1", 42, "pickple.local");
            assert_eq!(super::expiry(&format!("<{id}>")), Some(42));
            assert_eq!(super::expiry("o1.order-confirmed@pickple.local"), None);
            let body = format!("Hi,\n\n{} c0ffee\n\n-- x\n", super::CODE_LINE);
            assert_eq!(super::code(&body).as_deref(), Some("c0ffee"));
            assert_eq!(super::code("no code here"), None);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    /// Waiting for the address to be confirmed (the code mailed to it) and then granted by the
    /// e-mail registry.
    Pending,
    Active,
    Rejected,
    Deleted,
}

/// Topic `view-users`, key: username. Holds the password hash: internal to the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserView {
    pub username: String,
    /// The account's immutable identity (empty for accounts older than it).
    #[serde(default)]
    pub user_id: String,
    /// Tokens carry the version they were issued under; a password change, a role change, a
    /// deletion or a sign-out everywhere moves it on, and older tokens stop working.
    #[serde(default)]
    pub token_version: u64,
    pub nickname: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub status: UserStatus,
    /// A new address waiting for its mailed code (an e-mail change, the account's own or a
    /// MASTER's); `email` stays the old one until it is confirmed and granted. Absent in views
    /// older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_email: Option<String>,
    /// Until when a PENDING sign-up can be confirmed; past it, the name is free again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_by: Option<Millis>,
    /// Why the last command on this user was rejected, if it was.
    pub rejection: Option<String>,
    pub updated_at: Millis,
    pub version: u64,
}
