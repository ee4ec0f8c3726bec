package faults

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/topology"
)

// Security: with control.secret, unsigned and wrongly signed commands are refused and change
// nothing; the reader role kreplay grants reads the live views and not the versions' schemas;
// kreplay talks to Kafka over SASL/SCRAM and over TLS, and to PostgreSQL over TLS; wrong Kafka
// credentials stop serve at once with a clear message.
func TestFaultSecurity(t *testing.T) {
	start := time.Now()
	var checks []string

	// Signed commands and the reader role.
	role := "reader_" + randomHex(4)
	e := newEnv(t, 4, bankgen.Config(topic, 4, "global", true))
	e.yaml = strings.Replace(e.yaml, "control:\n", "control:\n  secret: s3cret\n", 1)
	e.yaml = strings.Replace(e.yaml, "postgres:\n", "postgres:\n  reader_role: "+role+"\n", 1)
	_, err := e.db.Exec(context.Background(), "CREATE ROLE "+role+" NOLOGIN")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = e.db.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = e.db.Exec(context.Background(), "DROP ROLE "+role)
	})
	e.produce(3000)
	s := e.startServe()
	eventually(t, 60*time.Second, func() bool { return e.caughtUp("balances_v1") }, "v1 did not catch up")
	signed := e.client()
	unsigned := clientWith(t, e, "")
	wrong := clientWith(t, e, "guess")
	create := control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)}
	for name, c := range map[string]*control.Client{"unsigned": unsigned, "wrongly signed": wrong} {
		out := command(c, 20*time.Second, create)
		require.NotNil(t, out, name)
		require.False(t, out.OK, name)
		require.Contains(t, out.Error, "unauthorized", name)
	}
	require.Equal(t, int64(0), e.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2'"), "refused commands changed nothing")
	require.Equal(t, 2.0, s.metric("kreplay_control_unauthorized_total", ""))
	out := command(signed, 20*time.Second, create)
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)
	checks = append(checks, "unsigned and wrongly signed commands refused")

	var n int64
	tx, err := e.db.Begin(context.Background())
	require.NoError(t, err)
	_, err = tx.Exec(context.Background(), "SET LOCAL ROLE "+role)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(context.Background(), "SELECT count(*) FROM public.balances").Scan(&n))
	require.Positive(t, n)
	_, err = tx.Exec(context.Background(), "SELECT count(*) FROM balances_v1.balances")
	require.ErrorContains(t, err, "permission denied for schema balances_v1")
	_ = tx.Rollback(context.Background())
	checks = append(checks, "reader role: live views yes, version schemas no")
	s.stop(t)

	// SASL/SCRAM to Kafka; TLS to PostgreSQL.
	sasl := newSecureEnv(t, []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "kreplay", "pa55")},
		[]kgo.Opt{kgo.SASL(scram.Auth{User: "kreplay", Pass: "pa55"}.AsSha256Mechanism())},
		"  sasl:\n    mechanism: SCRAM-SHA-256\n    username: kreplay\n    password: pa55\n")
	sasl.yaml = strings.Replace(sasl.yaml, "sslmode=disable", "sslmode=require", 1)
	sasl.produce(2000)
	s = sasl.startServe()
	eventually(t, 60*time.Second, func() bool { return sasl.caughtUp("balances_v1") }, "v1 did not catch up over SASL")
	require.True(t, sasl.exact(bankTables))
	var ssl bool
	require.NoError(t, sasl.db.QueryRow(context.Background(), `SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
		WHERE a.datname = $1 AND a.application_name LIKE 'kreplay%'`, dbName(sasl.dbURL)).Scan(&ssl))
	require.True(t, ssl, "kreplay's PostgreSQL connections use TLS")
	s.stop(t)
	checks = append(checks, "SASL/SCRAM-SHA-256 to Kafka", "TLS to PostgreSQL")

	// Wrong credentials: serve does not start consuming and says why. (A real broker answers a
	// bad SCRAM proof with SASL_AUTHENTICATION_FAILED and serve exits at once, see
	// internal/kafkaconn.TestKafkaRefusedIsFinal; kfake closes the connection instead, so serve waits.)
	bad := strings.Replace(sasl.yaml, "password: pa55", "password: nope", 1)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o600))
	before := sasl.scalar("SELECT count(*) FROM kreplay.checkpoints")
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "serve", "-c", path)
	outb, _ := cmd.CombinedOutput()
	require.Contains(t, string(outb), "waiting for kafka")
	require.Equal(t, before, sasl.scalar("SELECT count(*) FROM kreplay.checkpoints"))
	checks = append(checks, "wrong SASL password: serve waits and says why")

	// TLS to Kafka.
	caFile, serverTLS := selfSigned(t)
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(ca)
	tlsEnv := newSecureEnv(t, []kfake.Opt{kfake.TLS(serverTLS)}, []kgo.Opt{kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})},
		fmt.Sprintf("  tls:\n    enabled: true\n    ca_file: %s\n", caFile))
	tlsEnv.produce(2000)
	s = tlsEnv.startServe()
	eventually(t, 60*time.Second, func() bool { return tlsEnv.caughtUp("balances_v1") }, "v1 did not catch up over TLS")
	require.True(t, tlsEnv.exact(bankTables))
	s.stop(t)
	checks = append(checks, "TLS to Kafka")

	record(t, row{Scenario: "7 security", Faults: strings.Join(checks, "; "), Events: 7000, Exact: true, Took: time.Since(start)})
}

// newSecureEnv is newEnv on a kfake cluster with security options, for the test's client and
// kreplay (kafkaYAML is added under kafka:).
func newSecureEnv(t *testing.T, opts []kfake.Opt, clientOpts []kgo.Opt, kafkaYAML string) *env {
	t.Helper()
	k := kafkatest.NewWithClient(t, map[string]int32{topic: 4}, opts, clientOpts)
	e := newEnvOn(t, k, 4, bankgen.Config(topic, 4, "global", true))
	e.yaml = strings.Replace(e.yaml, "kafka:\n", "kafka:\n"+kafkaYAML, 1)
	return e
}

func clientWith(t *testing.T, e *env, secret string) *control.Client {
	t.Helper()
	cfg, err := topology.Parse([]byte(e.yaml))
	require.NoError(t, err)
	cfg.SetDefaults()
	cfg.Control.Secret = secret
	c, err := control.NewClient(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// selfSigned makes a CA-less self-signed certificate for 127.0.0.1 and returns its PEM file
// (the clients' CA) and the server's TLS config.
func selfSigned(t *testing.T) (string, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(path, certPEM, 0o600))
	return path, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}
