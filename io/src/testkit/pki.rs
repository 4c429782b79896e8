//! Certificates made on the spot for the TLS tests (here and in grape-bin's interop
//! tests): a CA, and leaves it signs for 127.0.0.1, valid now or at chosen dates.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
};

use crate::peer::{ClientTls, Fingerprint, ServerTls};

/// A test CA.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Its SHA-256 fingerprint.
    pub fingerprint: Fingerprint,
}

/// When an issued certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From 1975 to 4096 (rcgen's default).
    Now,
    /// 2000 to 2001.
    Expired,
    /// 2090 to 2100.
    NotYet,
}

impl TestCa {
    /// A fresh CA called `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `cn` naming 127.0.0.1 and localhost, valid now.
    pub fn issue(&self, cn: &str) -> Issued {
        self.issue_for(cn, &["127.0.0.1", "localhost"], Validity::Now)
    }

    /// A leaf for `cn` naming `sans` (IP addresses or DNS names), valid as `validity` says.
    pub fn issue_for(&self, cn: &str, sans: &[&str], validity: Validity) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "grenache-rs tests");
        match validity {
            Validity::Now => {}
            Validity::Expired => {
                params.not_before = date_time_ymd(2000, 1, 1);
                params.not_after = date_time_ymd(2001, 1, 1);
            }
            Validity::NotYet => {
                params.not_before = date_time_ymd(2090, 1, 1);
                params.not_after = date_time_ymd(2100, 1, 1);
            }
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: Fingerprint::of(cert.der()),
        }
    }

    /// A server's TLS that asks clients for certificates this CA signed.
    pub fn server(&self, leaf: &Issued) -> ServerTls {
        let ca = self.pem();
        ServerTls::from_pem(
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            Some(ca.as_bytes()),
        )
        .expect("server TLS")
    }

    /// A client's TLS trusting this CA, showing `leaf` when asked (if given).
    pub fn client(&self, leaf: Option<&Issued>) -> ClientTls {
        let ca = self.pem();
        let identity = leaf.map(|l| (l.cert_pem.as_bytes(), l.key_pem.as_bytes()));
        ClientTls::from_pem(ca.as_bytes(), identity).expect("client TLS")
    }
}
