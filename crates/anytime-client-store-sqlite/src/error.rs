use std::path::PathBuf;

/// What went wrong with a profile's database, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("could not create the profile directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("the profile database failed while {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not upgrade the profile to version {version}: {source}")]
    Migrate {
        version: usize,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "this profile was written by a newer Anytime (profile version {found}, this one knows up to {known}): \
         update anytime to use it"
    )]
    TooNew { found: i64, known: usize },
}

/// Attaches what the store was doing to a database error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, ProfileError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, ProfileError> {
        self.map_err(|source| ProfileError::Db { context, source })
    }
}
