//! Where tlsgate keeps its own state when no config file says otherwise. One place, so `tlsgate
//! run` without a config and `tlsgate ca init` agree on where the interception CA lives.

use std::ffi::OsString;
use std::path::PathBuf;

/// The interception CA used by `tlsgate run` without `--config` and created by `tlsgate ca init`:
/// `$XDG_DATA_HOME/tlsgate/ca`, else `$HOME/.local/share/tlsgate/ca`.
pub fn default_ca_dir() -> Result<PathBuf, String> {
    data_dir_from(|name| std::env::var_os(name)).map(|dir| dir.join("ca"))
}

/// tlsgate's data directory, reading the environment through `var`. Per the XDG base directory
/// spec, an empty or relative `XDG_DATA_HOME` is ignored.
fn data_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    if let Some(xdg) = var("XDG_DATA_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("tlsgate"));
    }
    match var("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(".local/share/tlsgate")),
        _ => Err(
            "cannot find a data directory: neither XDG_DATA_HOME nor HOME is set to an absolute \
             path"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn prefers_xdg_data_home_then_home() {
        let both = [("XDG_DATA_HOME", "/xdg"), ("HOME", "/home/u")];
        assert_eq!(
            data_dir_from(env(&both)),
            Ok(Path::new("/xdg/tlsgate").into())
        );
        let home = [("HOME", "/home/u")];
        assert_eq!(
            data_dir_from(env(&home)),
            Ok(Path::new("/home/u/.local/share/tlsgate").into())
        );
    }

    #[test]
    fn ignores_relative_or_empty_xdg_data_home() {
        for xdg in ["", "relative/dir"] {
            let vars = [("XDG_DATA_HOME", xdg), ("HOME", "/home/u")];
            assert_eq!(
                data_dir_from(env(&vars)),
                Ok(Path::new("/home/u/.local/share/tlsgate").into()),
                "XDG_DATA_HOME={xdg:?}"
            );
        }
    }

    #[test]
    fn refuses_when_nothing_usable_is_set() {
        assert!(data_dir_from(env(&[])).is_err());
        assert!(data_dir_from(env(&[("HOME", "")])).is_err());
    }
}
