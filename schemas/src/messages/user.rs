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
    },
    UpdateProfile {
        username: String,
        nickname: Option<String>,
        email: Option<String>,
        password_hash: Option<String>,
    },
    DeleteUser {
        username: String,
    },
    ChangeRole {
        username: String,
        role: Role,
        by: String,
    },
    /// Sign out everywhere: every access and refresh token issued so far stops working.
    RevokeTokens {
        username: String,
    },
    /// Reply from the e-mail registry: the address is now held by `username`.
    EmailClaimed {
        username: String,
        email: String,
    },
    /// Reply from the e-mail registry: another user holds the address.
    EmailTaken {
        username: String,
        email: String,
    },
}
message_type!(UserCommand {
    SignUp,
    UpdateProfile,
    DeleteUser,
    ChangeRole,
    RevokeTokens,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    /// Waiting for the e-mail registry to confirm the address is free.
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
    /// Why the last command on this user was rejected, if it was.
    pub rejection: Option<String>,
    pub updated_at: Millis,
    pub version: u64,
}
