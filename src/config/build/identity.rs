//! The identity half of the builder: the scope vocabulary and the users.

use super::file::Spanned;
use super::*;
use crate::auth::password::PasswordHash;
use crate::auth::user::{credential_version, Profile, User, Users};
use crate::policy::authz::Vocabulary;
use std::collections::BTreeMap;
use std::path::PathBuf;

impl Builder {
    pub(super) fn vocabulary(
        &self,
        raw: &BTreeMap<String, Spanned<file::ScopeFile>>,
    ) -> Result<Vocabulary, ConfigError> {
        let mut defs = Vec::with_capacity(raw.len());
        for (name, scope) in raw {
            if !valid_scope_name(name) {
                return Err(self.at(scope, format!(
                    "scopes: `{name}` is not a valid scope name (printable ASCII, no spaces, quotes or backslashes)"
                )));
            }
            let (description, implies) = match &scope.value {
                file::ScopeFile::Description(d) => (d.clone(), Vec::new()),
                file::ScopeFile::Full(f) => (f.description.clone(), f.implies.clone()),
            };
            defs.push((name.clone(), description, implies));
        }
        Vocabulary::new(defs).map_err(|e| {
            let at = raw.values().next().map(|s| &s.referenced);
            self.err(at, format!("scopes: {e}"))
        })
    }

    pub(super) fn users(
        &self,
        raw: &file::GatewayFile,
        vocabulary: &Vocabulary,
        files: &mut Vec<PathBuf>,
        digest_input: &mut String,
    ) -> Result<Users, ConfigError> {
        match (&raw.users, &raw.users_file) {
            (Some(_), Some(v)) => Err(self.at(
                v,
                "users_file: give either `users:` or `users_file:`, not both",
            )),
            (Some(users), None) => self.user_records(users, vocabulary),
            (None, None) => Ok(Users::default()),
            (None, Some(v)) => {
                let path = self.resolve(&self.string(v, "users_file")?);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.at(
                        v,
                        format!("users_file: cannot read {}: {e}", path.display()),
                    )
                })?;
                let nested = Builder::new(&path);
                let users: file::UsersFile = file::parse(&text).map_err(|e| ConfigError {
                    file: path.clone(),
                    position: e.location,
                    message: e.message,
                })?;
                digest_input.push_str(&text);
                files.push(path);
                nested.user_records(&users, vocabulary)
            }
        }
    }

    fn user_records(
        &self,
        raw: &BTreeMap<String, Spanned<file::UserFile>>,
        vocabulary: &Vocabulary,
    ) -> Result<Users, ConfigError> {
        let mut users = Users::with_capacity_and_hasher(raw.len(), Default::default());
        for (name, user) in raw {
            if !valid_username(name) {
                return Err(self.at(user, format!(
                    "users: `{name}` is not a valid username (ASCII letters, digits, `.`, `_`, `-`, `@`; at most 64)"
                )));
            }
            let key = name.to_ascii_lowercase();
            let hash = PasswordHash::parse(&user.value.password)
                .map_err(|e| self.at(user, format!("users.{name}.password: {e}")))?;
            for scope in &user.value.scopes {
                if vocabulary.id(scope).is_none() {
                    return Err(self.at(
                        user,
                        format!(
                            "users.{name}: unknown scope `{scope}` (declare it under `scopes:`)"
                        ),
                    ));
                }
            }
            let raw = &user.value;
            let profile = Profile::new(
                raw.email.clone(),
                raw.name.clone(),
                raw.groups.clone(),
                raw.attributes.clone(),
            )
            .map_err(|e| self.at(user, format!("users.{name}: {e}")))?;
            let record = User {
                hash,
                holds: vocabulary.expand(raw.scopes.iter().map(String::as_str)),
                scopes: raw.scopes.clone(),
                disabled: raw.disabled,
                credential_version: credential_version(&raw.password),
                profile,
            };
            if users.insert(key, record).is_some() {
                return Err(self.at(
                    user,
                    format!("users: `{name}` differs from another user only in letter case"),
                ));
            }
        }
        Ok(users)
    }
}
