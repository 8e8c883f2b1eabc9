//! The JOSE signature algorithms Portcullis knows, and which of them it will sign with.

use jsonwebtoken::Algorithm;

/// A signature algorithm, always fixed by configuration (a key's or an issuer's), never taken
/// from a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    HS256,
    HS384,
    HS512,
    ES256,
    ES384,
    EdDSA,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}

/// How a key of an algorithm is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Hmac,
    Ec,
    Ed,
    Rsa,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 12] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
    ];

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Self::HS256 | Self::HS384 | Self::HS512 => KeyFamily::Hmac,
            Self::ES256 | Self::ES384 => KeyFamily::Ec,
            Self::EdDSA => KeyFamily::Ed,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                KeyFamily::Rsa
            }
        }
    }

    /// Whether the gateway may sign its own tokens with this algorithm. RSA is verify-only:
    /// the `rsa` crate's private-key operations have an unfixed timing side channel
    /// (RUSTSEC-2023-0071), and ES384 keys are not produced by `gen-key`.
    pub fn can_sign(self) -> bool {
        matches!(
            self,
            Self::HS256 | Self::HS384 | Self::HS512 | Self::ES256 | Self::EdDSA
        )
    }

    pub fn is_symmetric(self) -> bool {
        self.family() == KeyFamily::Hmac
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA => Algorithm::EdDSA,
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in SigningAlgorithm::ALL {
            assert_eq!(SigningAlgorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(SigningAlgorithm::from_name("es256"), None);
        assert_eq!(SigningAlgorithm::from_name("none"), None);
    }

    #[test]
    fn rsa_never_signs() {
        for alg in SigningAlgorithm::ALL {
            if alg.family() == KeyFamily::Rsa {
                assert!(!alg.can_sign(), "{alg:?}");
            }
        }
    }
}
