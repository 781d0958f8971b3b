//! Per-call text from a buyer's config: `{field}` placeholders in its URI's user part, its
//! extra headers and its caller presentation (`from_user`), filled from the call.

/// The fields a template may name.
pub const FIELDS: &[&str] = &[
    "caller", "called", "carrier", "campaign", "buyer", "call_id",
];

/// What a call fills the fields with. Every value is already safe for a SIP header and a URI
/// user part: numbers are digits (or `anonymous`), ids are config ids, the call id a UUID.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The caller as a SIP user part.
    pub caller: &'a str,
    /// The dialled number as a SIP user part.
    pub called: &'a str,
    /// The carrier's id.
    pub carrier: &'a str,
    /// The campaign's id.
    pub campaign: &'a str,
    /// The buyer's id.
    pub buyer: &'a str,
    /// DCE's call id.
    pub call_id: &'a str,
}

/// Check `template`: every `{…}` names a field of [`FIELDS`], braces balance, and the text
/// has no control characters (a header value must stay one line).
pub fn check(template: &str) -> Result<(), String> {
    if template.chars().any(char::is_control) {
        return Err("has a control character (CR, LF, tab …)".into());
    }
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if rest.as_bytes()[i] == b'}' {
            return Err("has a `}` without its `{`".into());
        }
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err("has a `{` without its `}`".into());
        };
        let name = &after[..j];
        if !FIELDS.contains(&name) {
            return Err(format!(
                "names `{{{name}}}`, which is no field (use {})",
                FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[j + 1..];
    }
    Ok(())
}

/// `template` with its fields filled (a checked template; an unknown `{…}` is left as is).
pub fn expand(template: &str, f: &Fields<'_>) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let mut out = template.to_owned();
    for (name, value) in [
        ("{caller}", f.caller),
        ("{called}", f.called),
        ("{carrier}", f.carrier),
        ("{campaign}", f.campaign),
        ("{buyer}", f.buyer),
        ("{call_id}", f.call_id),
    ] {
        if out.contains(name) {
            out = out.replace(name, value);
        }
    }
    out
}

/// Headers a buyer's `headers` may not set: DCE owns them (routing, the dialog, the body,
/// authentication, its own call id), in full and compact form.
pub fn reserved_header(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "via",
        "v",
        "from",
        "f",
        "to",
        "t",
        "call-id",
        "i",
        "cseq",
        "contact",
        "m",
        "max-forwards",
        "content-type",
        "c",
        "content-length",
        "l",
        "content-encoding",
        "e",
        "route",
        "record-route",
        "authorization",
        "proxy-authorization",
        "allow",
        "supported",
        "k",
        "require",
        "proxy-require",
        "x-dce-call-id",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// A header name is an RFC 3261 token.
pub fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fill_and_mistakes_are_named() {
        let f = Fields {
            caller: "13105551234",
            called: "18005550100",
            carrier: "carrier-a",
            campaign: "auto",
            buyer: "acme",
            call_id: "u-1",
        };
        assert!(check("pub={carrier};camp={campaign}").is_ok());
        assert_eq!(
            expand("pub={carrier};camp={campaign};{caller}", &f),
            "pub=carrier-a;camp=auto;13105551234"
        );
        assert_eq!(expand("static", &f), "static");
        assert!(check("{callr}")
            .unwrap_err()
            .contains("`{callr}`, which is no field"));
        assert!(check("{caller").unwrap_err().contains("without its `}`"));
        assert!(check("caller}").unwrap_err().contains("without its `{`"));
        assert!(check("a\r\nVia: evil").unwrap_err().contains("control"));
        assert!(
            reserved_header("Call-ID") && reserved_header("v") && !reserved_header("X-Publisher")
        );
        assert!(header_name_ok("X-Publisher") && !header_name_ok("X Pub") && !header_name_ok("X:"));
    }
}
