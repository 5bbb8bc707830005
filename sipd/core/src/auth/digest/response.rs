//! The `response` value a client must send (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1).
//! Pure functions: the published test vectors check exactly this.

use super::algorithm::Algorithm;
use super::authorization::{DigestAuthorization, Qop};

/// Expected `response` for `auth`, given the plain HA1 (`H(username:realm:password)`) of the
/// algorithm's hash. `None` when the request lacks what the algorithm needs (a `-sess`
/// algorithm without qop has no cnonce to derive its session key from).
pub fn expected_response(ha1: &str, method: &str, auth: &DigestAuthorization) -> Option<String> {
    let h = auth.algorithm.hash();
    let ha1 = if auth.algorithm.is_sess() {
        let q = auth.qop.as_ref()?;
        h.hex(&[ha1.as_bytes(), auth.nonce.as_bytes(), q.cnonce.as_bytes()])
    } else {
        ha1.to_owned()
    };
    let ha2 = h.hex(&[method.as_bytes(), auth.uri.as_bytes()]);
    Some(match &auth.qop {
        Some(q) => {
            let qop = match q.qop {
                Qop::Auth => "auth",
            };
            h.hex(&[
                ha1.as_bytes(),
                auth.nonce.as_bytes(),
                q.nc_text.as_bytes(),
                q.cnonce.as_bytes(),
                qop.as_bytes(),
                ha2.as_bytes(),
            ])
        }
        None => h.hex(&[ha1.as_bytes(), auth.nonce.as_bytes(), ha2.as_bytes()]),
    })
}

/// Whether `alg` may be used without qop. Only RFC 2069-era MD5 clients do that; the newer
/// algorithms were defined with qop mandatory.
pub(crate) fn allows_no_qop(alg: Algorithm) -> bool {
    alg == Algorithm::Md5
}

#[cfg(test)]
mod tests {
    use super::super::algorithm::HashFn;
    use super::super::credential::Credential;
    use super::*;

    fn ha1(alg: Algorithm, user: &str, realm: &str, pw: &str) -> String {
        Credential::Password {
            password: pw.into(),
        }
        .ha1(alg.hash(), user, realm)
        .unwrap()
    }

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_vector() {
        let a: DigestAuthorization = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#.parse().unwrap();
        let k = ha1(
            a.algorithm,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(expected_response(&k, "GET", &a).unwrap(), a.response);
        assert_eq!(a.response, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 §3.9.1, both responses.
    #[test]
    fn rfc7616_vectors() {
        let base = r#"username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        for (alg, resp) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let a: DigestAuthorization =
                format!("Digest {base}, algorithm={alg}, response=\"{resp}\"")
                    .parse()
                    .unwrap();
            let k = ha1(
                a.algorithm,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life",
            );
            assert_eq!(expected_response(&k, "GET", &a).unwrap(), resp, "{alg}");
        }
    }

    /// RFC 2617 §3.2.2.2: the session key is H(H(A1'):nonce:cnonce); checked by hand here
    /// because no RFC publishes a -sess vector.
    #[test]
    fn sess_derives_from_plain_ha1() {
        let mk = |alg: &str| -> DigestAuthorization {
            let len = alg.parse::<Algorithm>().unwrap().hash().hex_len();
            format!(r#"Digest username="u", realm="r", nonce="N", uri="sip:x", qop=auth, nc=00000001, cnonce="C", algorithm={alg}, response="{}""#, "0".repeat(len)).parse().unwrap()
        };
        for (sess, hash) in [("MD5-sess", HashFn::Md5), ("SHA-256-sess", HashFn::Sha256)] {
            let a = mk(sess);
            let plain = hash.hex(&[b"u", b"r", b"pw"]);
            let session = hash.hex(&[plain.as_bytes(), b"N", b"C"]);
            let ha2 = hash.hex(&[b"INVITE", b"sip:x"]);
            let want = hash.hex(&[
                session.as_bytes(),
                b"N",
                b"00000001",
                b"C",
                b"auth",
                ha2.as_bytes(),
            ]);
            assert_eq!(expected_response(&plain, "INVITE", &a).unwrap(), want);
        }
    }
}
