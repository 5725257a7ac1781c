//! Who may do what: the rights rules (plain data in `crate::rules`) evaluated for a caller,
//! and the admin right. Pure matching; no HTTP here.

use std::collections::HashSet;

pub use crate::rules::{AccessRule, Glob, Right};

/// A set of rights, small enough to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl Rights {
    pub const ALL: Rights = Rights {
        pull: true,
        push: true,
        delete: true,
    };

    pub fn has(self, r: Right) -> bool {
        match r {
            Right::Pull => self.pull,
            Right::Push => self.push,
            Right::Delete => self.delete,
        }
    }

    pub fn add(&mut self, r: Right) {
        match r {
            Right::Pull => self.pull = true,
            Right::Push => self.push = true,
            Right::Delete => self.delete = true,
        }
    }

    pub fn union(mut self, other: Rights) -> Rights {
        self.pull |= other.pull;
        self.push |= other.push;
        self.delete |= other.delete;
        self
    }

    pub fn iter(self) -> impl Iterator<Item = Right> {
        [Right::Pull, Right::Push, Right::Delete]
            .into_iter()
            .filter(move |r| self.has(*r))
    }
}

/// The caller as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Anonymous,
    User(String),
}

impl Subject {
    pub fn name(&self) -> &str {
        match self {
            Subject::Anonymous => "",
            Subject::User(u) => u,
        }
    }
}

/// The rules in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<AccessRule>,
    admins: HashSet<String>,
}

impl Policy {
    pub fn new(rules: Vec<AccessRule>, admins: Vec<String>) -> Policy {
        Policy {
            rules,
            admins: admins.into_iter().collect(),
        }
    }

    /// Rights of `who` on `repo`. With no rules, every authenticated user may do everything
    /// and anonymous callers nothing (Distribution's htpasswd mode). Users also get what
    /// anonymous callers get; admins may pull everything (they import repositories no rule
    /// may name yet, and must be able to list and check them).
    pub fn rights(&self, who: &Subject, repo: &str) -> Rights {
        if self.rules.is_empty() {
            return match who {
                Subject::Anonymous => Rights::default(),
                Subject::User(_) => Rights::ALL,
            };
        }
        let mut out = Rights {
            pull: self.is_admin(who),
            ..Rights::default()
        };
        for rule in &self.rules {
            if !rule.repos.iter().any(|g| g.matches(repo)) {
                continue;
            }
            let applies = rule.users.iter().any(|u| match (u.as_str(), who) {
                ("anonymous", _) => true,
                ("*", Subject::User(_)) => true,
                (name, Subject::User(me)) => name == me,
                _ => false,
            });
            if applies {
                for r in &rule.allow {
                    out.add(*r);
                }
            }
        }
        out
    }

    /// Whether anonymous callers may do anything at all (then `/v2/` does not demand a login).
    pub fn anonymous_has_rights(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.users.iter().any(|u| u == "anonymous") && !r.allow.is_empty())
    }

    pub fn is_admin(&self, who: &Subject) -> bool {
        matches!(who, Subject::User(u) if self.admins.contains(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        Glob::new(s).expect("glob")
    }

    #[test]
    fn rules_add_up_and_anonymous_counts_for_users() {
        let rule = |repos: &[&str], users: &[&str], allow: &[Right]| AccessRule {
            repos: repos.iter().map(|r| g(r)).collect(),
            users: users.iter().map(|u| u.to_string()).collect(),
            allow: allow.to_vec(),
        };
        let p = Policy::new(
            vec![
                rule(&["public/**"], &["anonymous"], &[Right::Pull]),
                rule(&["team/*"], &["alice"], &[Right::Pull, Right::Push]),
                rule(&["team/*"], &["*"], &[Right::Pull]),
            ],
            vec!["root".into()],
        );
        let alice = Subject::User("alice".into());
        let bob = Subject::User("bob".into());
        assert!(p.rights(&Subject::Anonymous, "public/x").pull);
        assert_eq!(p.rights(&Subject::Anonymous, "team/x"), Rights::default());
        assert!(p.rights(&bob, "public/a/b").pull);
        assert!(p.rights(&alice, "team/x").push);
        assert!(!p.rights(&bob, "team/x").push);
        assert!(p.rights(&bob, "team/x").pull);
        assert!(!p.rights(&alice, "team/x").delete);
        assert!(p.is_admin(&Subject::User("root".into())));
        // Issue 10, defect 16: an admin may read what no rule names for it, and only read.
        let root = Subject::User("root".into());
        assert_eq!(
            p.rights(&root, "imported/x"),
            Rights {
                pull: true,
                ..Rights::default()
            }
        );
        assert!(!p.is_admin(&alice));
        assert!(p.anonymous_has_rights());
        let open = Policy::default();
        assert_eq!(open.rights(&bob, "any"), Rights::ALL);
        assert_eq!(open.rights(&Subject::Anonymous, "any"), Rights::default());
    }
}
