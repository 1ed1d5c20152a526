package auth

import "errors"

// Errors a caller may branch on. Every error Verify and Extract return wraps
// exactly one of them. No error text ever contains the token or a claim value.
var (
	// ErrNoToken: the request carries no token in any configured place.
	ErrNoToken = errors.New("no token")
	// ErrMalformed: the token is not a compact JWS this verifier accepts.
	ErrMalformed = errors.New("malformed token")
	// ErrSignature: no configured key verifies the token with an algorithm
	// that key allows.
	ErrSignature = errors.New("invalid signature")
	// ErrExpired: exp (plus leeway) has passed, or exp is missing.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf or iat lies in the future beyond the leeway.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrClaims: iss, aud, the user claim or the tenant claim is unacceptable.
	ErrClaims = errors.New("invalid claims")
	// ErrNotReady: no verification keys are loaded yet (JWKS not fetched).
	ErrNotReady = errors.New("verification keys not loaded")
)
