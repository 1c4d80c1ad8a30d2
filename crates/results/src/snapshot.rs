//! What the page shows: the tops of the leaderboards of the Redis contract, read in one round
//! trip whose size does not grow with the number of distinct names.

use redis::aio::ConnectionManager;
use serde::Serialize;

use vote_store::keys;
use vote_store::leaderboard::{queue_top, top_from, Top};

/// How many bands the page lists.
pub const TOP_BANDS: usize = 50;
/// How many paths the page lists.
pub const TOP_PATHS: usize = 16;
/// How many albums the page lists.
pub const TOP_ALBUMS: usize = 10;
/// How many of the latest votes the page lists.
pub const RECENT_VOTES: usize = 20;

/// One band's or path's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub name: String,
    pub votes: u64,
}

/// One album's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlbumCount {
    pub band: String,
    pub album: String,
    pub votes: u64,
}

/// The live results at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub total: u64,
    /// The [`TOP_BANDS`] bands with the most votes, most first.
    pub bands: Vec<Count>,
    /// How many distinct bands have votes (the leaderboard's size).
    pub band_names: u64,
    /// Votes for bands beyond the leaderboard's cap of names (counted in the total only).
    pub bands_overflow: u64,
    /// The paths (`wasm`, `grpc`, ...), most votes first.
    pub paths: Vec<Count>,
    /// The most voted albums, most votes first.
    pub top_albums: Vec<AlbumCount>,
    /// The latest votes, newest first, as the consumer stored them.
    pub recent: Vec<serde_json::Value>,
    /// When this snapshot was read (unix milliseconds).
    pub read_at_ms: i64,
}

/// A leaderboard's top as counts.
fn counts(top: Top) -> Vec<Count> {
    top.members.into_iter().map(|(name, votes)| Count { name, votes }).collect()
}

/// The most voted albums; members that do not decode are skipped.
fn top_albums(top: Top) -> Vec<AlbumCount> {
    top.members
        .into_iter()
        .filter_map(|(field, votes)| {
            let (band, album) = vote_store::decode_album_field(&field)?;
            Some(AlbumCount { band, album, votes })
        })
        .collect()
}

/// Reads the counters in one pipelined round trip of bounded size.
pub async fn read(redis: &mut ConnectionManager) -> redis::RedisResult<Snapshot> {
    // A pipeline's replies come flat: the total, three per leaderboard, the recent votes.
    type Members = Vec<(String, f64)>;
    type Reply = (Option<u64>, Members, u64, Option<u64>, Members, u64, Option<u64>, Members, u64, Option<u64>, Vec<String>);
    let mut pipe = redis::pipe();
    pipe.get(keys::TOTAL);
    queue_top(&mut pipe, keys::BANDS, TOP_BANDS);
    queue_top(&mut pipe, keys::PATHS, TOP_PATHS);
    queue_top(&mut pipe, keys::ALBUMS, TOP_ALBUMS);
    pipe.lrange(keys::RECENT, 0, RECENT_VOTES as isize - 1);
    let (total, bands, band_names, bands_overflow, paths, path_names, paths_overflow, albums, album_names, albums_overflow, recent): Reply =
        pipe.query_async(redis).await?;
    let bands = top_from(bands, band_names, bands_overflow);
    Ok(Snapshot {
        total: total.unwrap_or(0),
        band_names: bands.size,
        bands_overflow: bands.overflow,
        bands: counts(bands),
        paths: counts(top_from(paths, path_names, paths_overflow)),
        top_albums: top_albums(top_from(albums, album_names, albums_overflow)),
        recent: recent.iter().filter_map(|entry| serde_json::from_str(entry).ok()).collect(),
        read_at_ms: vote_core::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderboard_members_sort_by_votes_then_name() {
        let top = top_from(vec![("b".to_owned(), 2.0), ("a".to_owned(), 2.0), ("c".to_owned(), 5.0)], 3, None);
        let names: Vec<String> = counts(top).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    #[test]
    fn top_albums_decode_escaped_members() {
        let members = vec![(vote_store::encode_album_field("A|B", r"C\D"), 100.0), ("band14|album".to_owned(), 14.0)];
        let albums = top_albums(top_from(members, 2, Some(3)));
        assert_eq!(albums[0], AlbumCount { band: "A|B".into(), album: r"C\D".into(), votes: 100 });
        assert_eq!(albums[1].band, "band14");
    }
}
