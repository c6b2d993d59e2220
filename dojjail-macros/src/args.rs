//! The arguments of `#[dojjail::test]`: `key = value` pairs, comma separated, each key at
//! most once. Every error is spanned at the offending token and says what to write instead.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Lit, LitStr, Path, Token};

/// Used when `timeout` is not given.
const DEFAULT_TIMEOUT_MS: u64 = 60_000;

const VALID_KEYS: &str = "valid arguments are `topology` and `timeout`";

/// `#[dojjail::test(topology = path::to::fn, timeout = "10s")]`.
pub(crate) struct TestArgs {
    /// The function that builds the test's `dojjail::Network`.
    pub topology: Path,
    /// How long the test may run, in milliseconds.
    pub timeout_ms: u64,
}

impl TestArgs {
    /// Parses the attribute's arguments; `attribute` is where to report a missing `topology`.
    pub fn parse(tokens: proc_macro2::TokenStream, attribute: Span) -> syn::Result<Self> {
        let args: RawArgs = syn::parse2(tokens)?;
        let topology = args.topology.ok_or_else(|| {
            syn::Error::new(
                attribute,
                "missing `topology`: add `topology = path::to::fn`, naming a function that \
                 returns dojjail::Network, e.g. #[dojjail::test(topology = two_hosts)]",
            )
        })?;
        Ok(TestArgs {
            topology,
            timeout_ms: args.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        })
    }
}

/// The arguments as written, before the required ones are checked.
struct RawArgs {
    topology: Option<Path>,
    timeout_ms: Option<u64>,
}

impl Parse for RawArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = RawArgs {
            topology: None,
            timeout_ms: None,
        };
        while !input.is_empty() {
            let key = input.call(Path::parse_mod_style).map_err(|error| {
                syn::Error::new(
                    error.span(),
                    "expected `topology = path::to::fn` or `timeout = \"10s\"`",
                )
            })?;
            let name = path_to_string(&key);
            let has_value = input.peek(Token![=]);
            match name.as_str() {
                "topology" | "timeout" if !has_value => {
                    return Err(missing_value(&key, &name));
                }
                "topology" if args.topology.is_some() => return Err(duplicate(&key, &name)),
                "timeout" if args.timeout_ms.is_some() => return Err(duplicate(&key, &name)),
                "topology" => {
                    input.parse::<Token![=]>()?;
                    args.topology = Some(parse_topology(&key, input)?);
                }
                "timeout" => {
                    input.parse::<Token![=]>()?;
                    args.timeout_ms = Some(parse_timeout(&key, input)?);
                }
                _ if !has_value && (input.is_empty() || input.peek(Token![,])) => {
                    return Err(syn::Error::new_spanned(
                        &key,
                        format!(
                            "unknown argument `{name}`; {VALID_KEYS}; to use `{name}` as the \
                             topology, write `topology = {name}`"
                        ),
                    ));
                }
                _ => {
                    return Err(syn::Error::new_spanned(
                        &key,
                        format!("unknown argument `{name}`; {VALID_KEYS}"),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

fn missing_value(key: &Path, name: &str) -> syn::Error {
    let example = if name == "topology" {
        "topology = path::to::fn"
    } else {
        "timeout = \"10s\""
    };
    syn::Error::new_spanned(key, format!("`{name}` needs a value: `{example}`"))
}

fn duplicate(key: &Path, name: &str) -> syn::Error {
    syn::Error::new_spanned(
        key,
        format!("duplicate argument `{name}`; give it only once"),
    )
}

/// `topology = path::to::fn`: the function itself, not a string or a call.
fn parse_topology(key: &Path, input: ParseStream) -> syn::Result<Path> {
    if input.is_empty() || input.peek(Token![,]) {
        return Err(missing_value(key, "topology"));
    }
    let value: Expr = input.parse()?;
    let hint = match &value {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            return Ok(path.path.clone());
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(string),
            ..
        }) => match string.parse::<Path>() {
            Ok(path) => format!(
                "`topology` takes a path, not a string: write `topology = {}`",
                path_to_string(&path)
            ),
            Err(_) => general_topology_hint(),
        },
        Expr::Call(call) if call.args.is_empty() => match &*call.func {
            Expr::Path(path) if path.qself.is_none() => format!(
                "`topology` takes the function itself, not a call: write `topology = {}`",
                path_to_string(&path.path)
            ),
            _ => general_topology_hint(),
        },
        _ => general_topology_hint(),
    };
    Err(syn::Error::new_spanned(value, hint))
}

fn general_topology_hint() -> String {
    "`topology` takes a path to a function that returns dojjail::Network, e.g. \
     `topology = two_hosts`"
        .to_owned()
}

/// `timeout = "10s"`: a whole number of `ms`, `s` or `m`, more than zero.
fn parse_timeout(key: &Path, input: ParseStream) -> syn::Result<u64> {
    if input.is_empty() || input.peek(Token![,]) {
        return Err(missing_value(key, "timeout"));
    }
    let value: Expr = input.parse()?;
    match &value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(string),
            ..
        }) => parse_duration(string),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => Err(syn::Error::new_spanned(
            int,
            format!(
                "`timeout` takes a string with a unit: write `timeout = \"{}s\"` for seconds \
                 or `timeout = \"{}ms\"` for milliseconds",
                int.base10_digits(),
                int.base10_digits()
            ),
        )),
        _ => Err(syn::Error::new_spanned(
            value,
            "`timeout` takes a string literal with a unit, e.g. `timeout = \"10s\"`",
        )),
    }
}

/// `"500ms"`, `"10s"`, `"2m"` in milliseconds.
fn parse_duration(string: &LitStr) -> syn::Result<u64> {
    let text = string.value();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let multiplier = match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        _ => None,
    };
    let millis = match (number.parse::<u64>(), multiplier) {
        (Ok(number), Some(multiplier)) => number.checked_mul(multiplier),
        _ => {
            return Err(syn::Error::new_spanned(
                string,
                format!(
                    "invalid timeout \"{text}\": write a whole number followed by `ms`, `s` \
                     or `m`, e.g. \"500ms\", \"10s\" or \"2m\""
                ),
            ));
        }
    };
    match millis {
        Some(0) => Err(syn::Error::new_spanned(
            string,
            "the timeout must be longer than zero, e.g. \"10s\"",
        )),
        Some(millis) => Ok(millis),
        None => Err(syn::Error::new_spanned(
            string,
            format!("timeout \"{text}\" is too long to count in milliseconds"),
        )),
    }
}

/// `a::b::c` as the user wrote it, without the spaces of `TokenStream`'s `Display`.
fn path_to_string(path: &Path) -> String {
    let segments: Vec<String> = path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    let leading = if path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    format!("{leading}{}", segments.join("::"))
}
