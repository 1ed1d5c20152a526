package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// key is one verification key and the algorithms it may verify. The
// algorithms come from the key's type (or a JWK's own "alg"), never from a
// token, which is what defeats alg:none and HS-signed-with-a-public-key.
type key struct {
	kid  string // empty: matches any kid
	algs []jwa.SignatureAlgorithm
	raw  any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

func (k key) allows(alg jwa.SignatureAlgorithm) bool {
	for _, a := range k.algs {
		if a == alg {
			return true
		}
	}
	return false
}

// keySet is immutable once published; a refresh builds a new one.
type keySet []key

// match returns the keys that may verify a token signed with alg and kid.
// hasKid reports whether a key with exactly that kid exists.
func (ks keySet) match(alg jwa.SignatureAlgorithm, kid string) (out []key, hasKid bool) {
	for _, k := range ks {
		if k.kid != "" && kid != "" {
			if k.kid != kid {
				continue
			}
			hasKid = true
		}
		if k.allows(alg) {
			out = append(out, k)
		}
	}
	return out, hasKid
}

var (
	hmacAlgs = []jwa.SignatureAlgorithm{jwa.HS256(), jwa.HS384(), jwa.HS512()}
	rsaAlgs  = []jwa.SignatureAlgorithm{jwa.RS256(), jwa.RS384(), jwa.RS512(), jwa.PS256(), jwa.PS384(), jwa.PS512()}
)

// algsFor returns the algorithms a public key's type allows.
func algsFor(raw any) ([]jwa.SignatureAlgorithm, error) {
	switch k := raw.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key is %d bits; at least 2048 are required", k.N.BitLen())
		}
		return rsaAlgs, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []jwa.SignatureAlgorithm{jwa.ES256()}, nil
		case elliptic.P384():
			return []jwa.SignatureAlgorithm{jwa.ES384()}, nil
		case elliptic.P521():
			return []jwa.SignatureAlgorithm{jwa.ES512()}, nil
		}
		return nil, errors.New("unsupported EC curve")
	case ed25519.PublicKey:
		return []jwa.SignatureAlgorithm{jwa.EdDSA()}, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", raw)
}

// loadPublicKeyFile reads one PEM public key or certificate.
func loadPublicKeyFile(path string) (key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return key{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return key{}, errors.New("no PEM block found")
	}
	var raw any
	switch block.Type {
	case "PUBLIC KEY":
		raw, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		raw, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			raw = cert.PublicKey
		}
	default:
		return key{}, fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return key{}, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	algs, err := algsFor(raw)
	if err != nil {
		return key{}, err
	}
	return key{algs: algs, raw: raw}, nil
}

// staticKeys builds the keys that come from the config itself.
func staticKeys(cfg Config) (keySet, error) {
	var ks keySet
	if len(cfg.HMACSecret) > 0 {
		ks = append(ks, key{algs: hmacAlgs, raw: append([]byte(nil), cfg.HMACSecret...)})
	}
	for i, f := range cfg.PublicKeyFiles {
		k, err := loadPublicKeyFile(f)
		if err != nil {
			return nil, &FieldError{Key: fmt.Sprintf("public_keys[%d]", i), Err: err}
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// jwksKeys converts a fetched JWK Set. Symmetric and encryption keys are
// skipped: a remote set may only add public signature keys.
func jwksKeys(set jwk.Set) (keySet, int) {
	var ks keySet
	skipped := 0
	for i := 0; i < set.Len(); i++ {
		jk, _ := set.Key(i)
		if use, ok := jk.KeyUsage(); ok && use != "sig" {
			skipped++
			continue
		}
		var raw any
		if err := jwk.Export(jk, &raw); err != nil {
			skipped++
			continue
		}
		raw = publicOf(raw)
		algs, err := algsFor(raw)
		if err != nil {
			skipped++
			continue
		}
		if a, ok := jk.Algorithm(); ok {
			sa, known := jwa.LookupSignatureAlgorithm(a.String())
			if !known || !(key{algs: algs}).allows(sa) {
				skipped++
				continue
			}
			algs = []jwa.SignatureAlgorithm{sa}
		}
		kid, _ := jk.KeyID()
		ks = append(ks, key{kid: kid, algs: algs, raw: raw})
	}
	return ks, skipped
}

// publicOf reduces a private key a careless JWKS might publish to its public half.
func publicOf(raw any) any {
	switch k := raw.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case ed25519.PrivateKey:
		return k.Public()
	}
	return raw
}
