//! Host problems the plan found. A dry-run prints them beside the command
//! line; a real start refuses to change the host while any is an error.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing worth telling the user about this host, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// What it is about: a device address, `firmware`, `qemu`, ...
    pub subject: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(severity: Severity, subject: impl fmt::Display, message: impl Into<String>) -> Self {
        Self {
            severity,
            subject: subject.to_string(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn error(subject: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, subject, message)
    }

    pub fn warning(subject: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, subject, message)
    }

    pub fn info(subject: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(Severity::Info, subject, message)
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: {}: {}", self.subject, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}
