//! The identity in a client certificate: its subject's common name.
//!
//! The certificate has already been verified against the configured CA by rustls when this
//! runs, so a small DER walk suffices; anything unexpected yields no name (and so no identity).

/// Tag bytes of the DER types on the path to the common name.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;
/// OID 2.5.4.3 (id-at-commonName), DER-encoded.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// Splits one TLV off the front of `der`: (tag, contents, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject common name of a DER certificate.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == EXPLICIT_VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = tlv(rest)? else {
        return None;
    };
    while !rdns.is_empty() {
        let (tag, mut set, next) = tlv(rdns)?;
        rdns = next;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, attribute, more) = tlv(set)?;
            set = more;
            let (tag, oid, value) = tlv(attribute)?;
            if tag == OID && oid == COMMON_NAME {
                let (_, text, _) = tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// The identity a certificate names: CN `tenant/subject`, or just `subject` (in the anonymous
/// tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub tenant: Option<String>,
    pub subject: String,
}

impl CertIdentity {
    pub fn from_common_name(cn: &str) -> Self {
        match cn.split_once('/') {
            Some((tenant, subject)) => Self {
                tenant: Some(tenant.to_owned()),
                subject: subject.to_owned(),
            },
            None => Self {
                tenant: None,
                subject: cn.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Arqon Labs");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lab/ada");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cn = subject_common_name(cert.der()).unwrap();
        assert_eq!(cn, "lab/ada");
        let id = CertIdentity::from_common_name(&cn);
        assert_eq!(id.tenant.as_deref(), Some("lab"));
        assert_eq!(id.subject, "ada");
    }

    #[test]
    fn garbage_has_no_name() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(subject_common_name(&[0x30, 0x85, 1, 2]), None);
        assert_eq!(subject_common_name(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
