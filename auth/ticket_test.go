package auth_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
)

// storeContract is what every TicketStore must do: a value comes out once,
// not after its TTL, and a concurrent race to take it has one winner.
func storeContract(t *testing.T, s auth.TicketStore) {
	ctx := context.Background()
	if err := s.Put(ctx, "k1", []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "k1", []byte("other"), time.Minute); !errors.Is(err, auth.ErrTicketStore) {
		t.Errorf("second Put of one key: %v, want ErrTicketStore", err)
	}
	if v, err := s.Take(ctx, "k1"); err != nil || string(v) != "v1" {
		t.Errorf("Take = %q, %v", v, err)
	}
	if _, err := s.Take(ctx, "k1"); !errors.Is(err, auth.ErrTicket) {
		t.Errorf("second Take: %v, want ErrTicket", err)
	}
	if _, err := s.Take(ctx, "never"); !errors.Is(err, auth.ErrTicket) {
		t.Errorf("Take of an unknown key: %v, want ErrTicket", err)
	}
	if err := s.Put(ctx, "short", []byte("v"), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	if _, err := s.Take(ctx, "short"); !errors.Is(err, auth.ErrTicket) {
		t.Errorf("Take after the TTL: %v, want ErrTicket", err)
	}
	if err := s.Put(ctx, "race", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Take(ctx, "race"); err == nil {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Errorf("%d concurrent Takes won, want exactly 1", n)
	}
}

func TestMemoryTickets(t *testing.T) {
	storeContract(t, auth.NewMemoryTickets(0))

	// Bounded: a full store refuses, and frees expired tickets first.
	s := auth.NewMemoryTickets(2)
	ctx := context.Background()
	for _, k := range []string{"a", "b"} {
		if err := s.Put(ctx, k, nil, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "c", nil, time.Minute); !errors.Is(err, auth.ErrTicketStore) {
		t.Errorf("Put into a full store: %v, want ErrTicketStore", err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := s.Put(ctx, "c", nil, time.Minute); err != nil {
		t.Errorf("Put after the others expired: %v", err)
	}
	if n := s.Len(); n != 1 {
		t.Errorf("Len = %d after the sweep, want 1", n)
	}
}

func TestRedisTickets(t *testing.T) {
	rd := wstest.StartRedis(t)
	down, err := auth.NewRedisTickets("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Put(context.Background(), "k", nil, time.Second); !errors.Is(err, auth.ErrTicketStore) {
		t.Errorf("Put with Redis down: %v, want ErrTicketStore", err)
	}
	s, err := auth.NewRedisTickets(rd.URL())
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, s.Run)
	wstest.WaitFor(t, "redis tickets connected", s.Ready)
	storeContract(t, s)
}

func TestTicketsIssueAndRedeem(t *testing.T) {
	tickets, err := auth.NewTickets(auth.TicketConfig{}, auth.NewMemoryTickets(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id := &auth.Identity{User: "alice", Expiry: time.Now().Add(time.Hour)}
	ticket, ttl, err := tickets.Issue(ctx, "the.jwt.itself", id)
	if err != nil || ttl != auth.DefaultTicketTTL || len(ticket) != 43 {
		t.Fatalf("Issue = %q, %s, %v", ticket, ttl, err)
	}
	if tok, err := tickets.Redeem(ctx, ticket); err != nil || tok != "the.jwt.itself" {
		t.Errorf("Redeem = %q, %v", tok, err)
	}
	if _, err := tickets.Redeem(ctx, ticket); !errors.Is(err, auth.ErrTicket) {
		t.Errorf("second Redeem: %v, want ErrTicket", err)
	}
	id.Expiry = time.Now().Add(10 * time.Second)
	if _, ttl, _ := tickets.Issue(ctx, "t", id); ttl > 10*time.Second {
		t.Errorf("ttl %s outlives the token's exp", ttl)
	}
	id.Expiry = time.Now().Add(500 * time.Millisecond)
	if _, _, err := tickets.Issue(ctx, "t", id); !errors.Is(err, auth.ErrExpired) {
		t.Errorf("Issue for a token about to expire: %v, want ErrExpired", err)
	}
	for name, cfg := range map[string]auth.TicketConfig{
		"ttl over 5m": {TTL: 6 * time.Minute}, "negative ttl": {TTL: -time.Second}, "param with &": {Param: "a&b"},
	} {
		if _, err := auth.NewTickets(cfg, auth.NewMemoryTickets(0)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
