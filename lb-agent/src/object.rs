//! The eBPF object the agent loads: embedded at build time, or a file given on the
//! command line (for trying a freshly built object without rebuilding the agent).

use std::path::Path;

#[cfg(lb_embedded_object)]
static EMBEDDED: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/lb.bpf.o"
)));
#[cfg(not(lb_embedded_object))]
static EMBEDDED: Option<&[u8]> = None;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(
        "this lb-agent was built without an embedded eBPF object; build it with `cargo xtask build` or pass --bpf-object"
    )]
    NotEmbedded,
    #[error("cannot read eBPF object {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The object's bytes: `path` if given, else the embedded object.
pub fn load_bytes(path: Option<&Path>) -> Result<std::borrow::Cow<'static, [u8]>, ObjectError> {
    match path {
        Some(p) => std::fs::read(p)
            .map(std::borrow::Cow::Owned)
            .map_err(|source| ObjectError::Read {
                path: p.display().to_string(),
                source,
            }),
        None => EMBEDDED
            .map(std::borrow::Cow::Borrowed)
            .ok_or(ObjectError::NotEmbedded),
    }
}
