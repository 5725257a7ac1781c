//! `airdock user add|del|passwd|list`: the users of the htpasswd file a server reads (it
//! picks up a change within `htpasswd::RECHECK`, no restart). Passwords come from a prompt
//! without echo on a terminal, else from the first line of stdin (`--password-stdin` says so
//! explicitly, as `docker login` does).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::auth::htpasswd;

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Add NAME, or replace its password if it exists.
    Add {
        name: String,
        #[command(flatten)]
        file: UserFile,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Change the password of NAME, who must exist.
    Passwd {
        name: String,
        #[command(flatten)]
        file: UserFile,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove NAME.
    Del {
        name: String,
        #[command(flatten)]
        file: UserFile,
    },
    /// Print the user names, one a line (no hashes).
    List {
        #[command(flatten)]
        file: UserFile,
    },
}

#[derive(clap::Args, Debug)]
pub struct UserFile {
    /// The htpasswd file (bcrypt), the one the server's --htpasswd names.
    #[arg(long, env = "AIRDOCK_HTPASSWD")]
    pub htpasswd: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PasswordArgs {
    /// Read the password from the first line of stdin, even on a terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// bcrypt cost (4 to 31; each step doubles the time a check takes).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub cost: u32,
}

/// Runs the command; the message to print on success.
pub fn run(cmd: UserCommand) -> anyhow::Result<String> {
    match cmd {
        UserCommand::Add {
            name,
            file,
            password,
        } => {
            htpasswd::check_user_name(&name).map_err(anyhow::Error::msg)?;
            let pw = read_password(&password, &name)?;
            let replaced = htpasswd::add_user(&file.htpasswd, &name, &pw, password.cost)?;
            let verb = if replaced { "updated" } else { "added" };
            Ok(format!("{verb} {name} in {}", file.htpasswd.display()))
        }
        UserCommand::Passwd {
            name,
            file,
            password,
        } => {
            // Before the prompt: no point typing a password for a user that is not there.
            if !htpasswd::list_users(&file.htpasswd)?.contains(&name) {
                bail!("no user {name:?} in {}", file.htpasswd.display());
            }
            let pw = read_password(&password, &name)?;
            htpasswd::set_password(&file.htpasswd, &name, &pw, password.cost)?;
            Ok(format!(
                "changed the password of {name} in {}",
                file.htpasswd.display()
            ))
        }
        UserCommand::Del { name, file } => {
            htpasswd::remove_user(&file.htpasswd, &name)?;
            Ok(format!("removed {name} from {}", file.htpasswd.display()))
        }
        UserCommand::List { file } => Ok(htpasswd::list_users(&file.htpasswd)?.join("\n")),
    }
}

/// The password: prompted for twice without echo on a terminal, else the first line of stdin
/// (its line ending removed, nothing else: spaces may be part of a password).
fn read_password(args: &PasswordArgs, name: &str) -> anyhow::Result<String> {
    let pw = if !args.password_stdin && std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))
            .context("reading the password")?;
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        if first != again {
            bail!("the passwords differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if pw.is_empty() {
        bail!("empty password; nothing changed");
    }
    Ok(pw)
}
