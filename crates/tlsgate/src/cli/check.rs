//! `tlsgate check`: everything `run` does short of binding sockets.

use std::path::Path;
use std::process::ExitCode;

use tlsgate_proxy::config::{Config, InterceptAction, InterceptMode, ListenerKind};

use crate::config;

pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!("config OK: {}", summary(&config));
            for (listener, slot) in policies(&config) {
                for notice in slot.notices() {
                    println!("listeners.{listener}.policy: note: {notice}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            let plural = if problems.len() == 1 { "" } else { "s" };
            eprintln!("{}: {} problem{plural}", path.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

/// The policy files of intercept listeners, by listener name.
fn policies(config: &Config) -> impl Iterator<Item = (&str, &tlsgate_proxy::policy::PolicySlot)> {
    config.listeners.iter().filter_map(|l| match &l.kind {
        ListenerKind::Intercept(i) => i.policy.as_deref().map(|slot| (l.name.as_str(), slot)),
        _ => None,
    })
}

/// `2 listeners (http: http on 0.0.0.0:80 via relay provider-b; relay: relay on [::]:8443 with 2 routes)`.
pub fn summary(config: &Config) -> String {
    let listeners: Vec<String> = config.listeners.iter().map(describe_listener).collect();
    let plural = if listeners.len() == 1 { "" } else { "s" };
    format!(
        "{} listener{plural} ({})",
        listeners.len(),
        listeners.join("; ")
    )
}

fn describe_listener(listener: &tlsgate_proxy::config::Listener) -> String {
    let (kind, detail) = match &listener.kind {
        ListenerKind::TlsPassthrough(edge) => {
            ("tls-passthrough", format!("via relay {}", edge.relay.name))
        }
        ListenerKind::Http(edge) => ("http", format!("via relay {}", edge.relay.name)),
        ListenerKind::Relay(relay) => {
            let n = relay.routes.routes.len();
            (
                "relay",
                format!("with {n} route{}", if n == 1 { "" } else { "s" }),
            )
        }
        ListenerKind::Intercept(intercept) => {
            let mode = match intercept.mode {
                InterceptMode::Explicit => "explicit",
                InterceptMode::Transparent => "transparent",
            };
            let n = intercept.rules.rules.len();
            let decided_by = match &intercept.policy {
                Some(slot) => {
                    let rules = slot.current().rules().len();
                    format!(
                        "with policy {} ({rules} rule{})",
                        slot.path().display(),
                        if rules == 1 { "" } else { "s" }
                    )
                }
                None => format!(
                    "with {n} rule{}, default {}",
                    if n == 1 { "" } else { "s" },
                    action_name(intercept.rules.default)
                ),
            };
            ("intercept", format!("{decided_by}, {mode} mode"))
        }
    };
    format!("{}: {kind} on {} {detail}", listener.name, listener.listen)
}

fn action_name(action: InterceptAction) -> &'static str {
    match action {
        InterceptAction::Bump => "bump",
        InterceptAction::Splice => "splice",
        InterceptAction::Deny => "deny",
    }
}
