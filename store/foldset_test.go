package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// FoldSet (the bench's ceiling_set) sends what an applier sends for its folds: run on a plain
// table, batch after batch, its statements give the table the applier gives, for a bare key and
// for a computed one (whose `last` needs the ordered aggregate and its work_mem setting).
func TestFoldSetGivesWhatTheApplierGives(t *testing.T) {
	t.Parallel()
	for name, yaml := range map[string]string{
		"bare key":     foldYAML,
		"computed key": replaceOnce(t, foldYAML, `key: {account_id: "@aggregate_id"}`, `key: {account_id: "lower(@aggregate_id)"}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, _ := open(t)
			def := definition(t, yaml)
			_, err := s.CreateVersion(ctx, store.NewVersion{Key: "folded_v1", Definition: def, Live: true,
				Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 0}}})
			require.NoError(t, err)
			_, err = s.Claim(ctx, "folded_v1", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}}, false)
			require.NoError(t, err)
			a, err := s.NewApplier(store.ApplierConfig{Key: "folded_v1", Definition: def})
			require.NoError(t, err)
			defer a.Close(ctx)

			conn := storetest.Conn(t, storetest.NewDatabase(t))
			for _, ddl := range def.Tables {
				_, err := conn.Exec(ctx, ddl)
				require.NoError(t, err)
			}
			set, err := store.NewFoldSet(def)
			require.NoError(t, err)

			off := int64(0)
			for batch := range 4 {
				var items []store.Item
				var events []topology.Event
				for i := range 50 + 25*batch {
					typ := "Deposited"
					if i%3 == 0 {
						typ = "Withdrawn"
					}
					it := item(typ, fmt.Sprintf("A%d", (i*7+batch)%13), fmt.Sprintf(`{"amount": %d}`, 1+(i*31)%97), 0, off)
					off++
					items = append(items, it)
					events = append(events, it.Event)
				}
				_, err := a.Apply(ctx, 1, items)
				require.NoError(t, err)
				var b pgx.Batch
				sts := set.Statements(events)
				require.NotEmpty(t, sts)
				for _, st := range sts {
					b.Queue(st.SQL, st.Args...)
				}
				require.NoError(t, conn.SendBatch(ctx, &b).Close())
			}
			const q = "SELECT account_id || ':' || total || ':' || events || ':' || low || ':' || high || ':' || last_event FROM %s ORDER BY account_id"
			applied := column(t, s.Pool(), fmt.Sprintf(q, "folded_v1.balances"))
			require.Len(t, applied, 13)
			require.Equal(t, applied, column(t, conn, fmt.Sprintf(q, "balances")))
		})
	}
}

func column(t *testing.T, q storetest.Querier, sql string) []string {
	t.Helper()
	rows, err := q.Query(context.Background(), sql)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}
