package control

import (
	"strings"
	"time"
)

// Announcement is a catalog's claim on the control and status topics, published on the status
// topic under AnnouncementKey(catalog id): by an instance that starts where no catalog holds the
// topics (or takes them over), then periodically by the leader of the catalog that holds them.
// Two catalogs on one status topic are a clash: the newcomer refuses to start (see
// processor/leader's installation guard for how the holder is decided).
type Announcement struct {
	Installation string    `json:"installation"`
	CatalogID    string    `json:"catalog_id"`
	Database     string    `json:"database"`
	Instance     string    `json:"instance"`
	AnnouncedAt  time.Time `json:"announced_at"`
	// Since is the status-topic offset of the claim that gave this catalog the topics. Absent
	// in the claim itself, whose own offset counts.
	Since *int64 `json:"since,omitempty"`
	// TakeOver marks a claim made with serve --take-over (and the announcements that follow
	// it): it takes the topics from the catalog that held them.
	TakeOver bool `json:"take_over,omitempty"`
}

// announcementPrefix starts the status-topic keys of announcements. Replay keys cannot contain
// ':', so announcements never collide with a version's status record.
const announcementPrefix = "installation:"

// AnnouncementKey is the status-topic key of a catalog's announcements.
func AnnouncementKey(catalogID string) string { return announcementPrefix + catalogID }

// IsAnnouncementKey reports whether a status-topic key is an announcement's.
func IsAnnouncementKey(key []byte) bool { return strings.HasPrefix(string(key), announcementPrefix) }
