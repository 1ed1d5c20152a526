package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/proxy"
)

// ticketsAndAssertion fills the issue-15 parts of cfg (tickets,
// first-message auth, assertions) and checks them; each error names its key.
func ticketsAndAssertion(cfg *config, param string, ttl, firstMessageTimeout time.Duration, maxPending int, keyFile, issuer string) []error {
	cfg.Tickets = auth.TicketConfig{Param: param, TTL: ttl}
	errs := prefixed("auth.", cfg.Tickets.Validate())
	if param == cfg.Auth.QueryParam || param == "" {
		errs = append(errs, fmt.Errorf("auth.ticket_param: must be set and differ from auth.query_param"))
	}
	if ttl <= 0 {
		errs = append(errs, fmt.Errorf("auth.ticket_ttl: must be positive"))
	}
	if firstMessageTimeout <= 0 {
		errs = append(errs, fmt.Errorf("auth.first_message_timeout: must be positive"))
	}
	if maxPending == 0 {
		errs = append(errs, fmt.Errorf("limits.max_pending_auth: must be positive, or -1 to disable"))
	}
	cfg.Proxy.FirstMessage = proxy.FirstMessage{Timeout: firstMessageTimeout, MaxPending: maxPending}
	cfg.Assertion = assertionConfig{KeyFile: keyFile, Issuer: issuer}
	if keyFile != "" {
		if _, err := auth.NewSigner(keyFile, issuer); err != nil {
			errs = append(errs, fmt.Errorf("assertion.key_file: %v", err))
		}
	}
	return errs
}

// useTickets gives handler its ticket store (Redis when redis.url is set,
// so any replica redeems what another issued; else memory), the ticket
// endpoint on the public mux, and the assertion signer with its JWKS on
// the admin mux. run, if not nil, must be run until shutdown. Nothing is
// dialled here: validate calls it too.
func useTickets(cfg *config, handler *proxy.Handler, admin *http.ServeMux) (run func(context.Context) error, err error) {
	var store auth.TicketStore = auth.NewMemoryTickets(cfg.Tickets.MaxMemory)
	if cfg.Bridge.URL != "" {
		rs, err := auth.NewRedisTickets(cfg.Bridge.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		store, run = rs, rs.Run
	}
	tickets, err := auth.NewTickets(cfg.Tickets, store)
	if err != nil {
		return nil, err
	}
	handler.UseTickets(tickets)
	if err := handler.Handle(proxy.TicketPath, handler.TicketHandler()); err != nil {
		return nil, err
	}
	if cfg.Assertion.KeyFile != "" {
		signer, err := auth.NewSigner(cfg.Assertion.KeyFile, cfg.Assertion.Issuer)
		if err != nil {
			return nil, fmt.Errorf("assertion.key_file: %w", err)
		}
		handler.SignAssertions(signer)
		admin.Handle("GET /.well-known/jwks.json", signer.JWKSHandler())
	}
	return run, nil
}
