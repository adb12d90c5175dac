//! Admin credentials as a unit: a password change voids every session and API token
//! the admin held, and API tokens are listed and revoked by their public id.

use crate::{AdminUser, ApiToken, Result, Sensitive, Store};

impl Store {
    /// Sets a new password hash and moves the admin's credential epoch on, in one write,
    /// so every session and API token issued before stops working at once; then deletes
    /// the admin's token records, which the epoch has already voided. `None` if there
    /// is no such admin.
    pub fn change_admin_password(
        &self,
        username: &str,
        password_hash: String,
    ) -> Result<Option<AdminUser>> {
        let _change = self.durability.gate.change();
        let hash = Sensitive::new(password_hash);
        let updated = self.admins.update(username, |current| match current {
            Some(a) => Ok(Some(AdminUser {
                password_hash: hash.clone(),
                credential_epoch: a.credential_epoch.wrapping_add(1),
                ..a
            })),
            None => Err(()),
        })?;
        let Ok(Some(admin)) = updated else {
            return Ok(None);
        };
        self.revoke_api_tokens_of(username)?;
        Ok(Some(admin))
    }

    /// Deletes every API token of `username`; returns how many there were.
    pub fn revoke_api_tokens_of(&self, username: &str) -> Result<usize> {
        let _change = self.durability.gate.change();
        let mut revoked = 0;
        for token in self.api_tokens.list()? {
            if token.username == username && self.api_tokens.remove(&token.token_hash)?.is_some() {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// The token whose [`ApiToken::id`] is `id`, if any.
    pub fn api_token_by_id(&self, id: &str) -> Result<Option<ApiToken>> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(self.api_tokens.list_prefix(id)?.into_iter().next())
    }
}
