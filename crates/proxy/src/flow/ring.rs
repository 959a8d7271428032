//! The most recent flow records, for `/flows`: a bounded ring that `Flows::emit` fills as it publishes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::FlowRecord;
use super::filter::FlowFilter;

/// Up to `capacity` records, oldest first; a full ring drops its oldest record.
#[derive(Debug)]
pub struct FlowRing {
    capacity: usize,
    records: Mutex<VecDeque<Arc<FlowRecord>>>,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            records: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    pub fn push(&self, record: Arc<FlowRecord>) {
        // A panic while holding the lock cannot leave the deque inconsistent: keep using it.
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The matching records, oldest first; only the newest `last` when given.
    pub fn snapshot(&self, filter: &FlowFilter, last: Option<usize>) -> Vec<Arc<FlowRecord>> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = records
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(last.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        drop(records);
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::flow::{FlowId, Mode, Role, Verdict};

    fn record(port: u16) -> Arc<FlowRecord> {
        Arc::new(FlowRecord {
            time: SystemTime::now(),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict: Verdict::Forwarded,
            rule: None,
            listener: Arc::from("l"),
            role: Role::Edge,
            mode: Mode::Tunnel,
            client: ([127, 0, 0, 1], port).into(),
            name: None,
            upstream: None,
            reason: None,
            detail: None,
            status: None,
            http: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
            duration: Duration::ZERO,
            tls: None,
        })
    }

    #[test]
    fn keeps_only_the_newest_records() {
        let ring = FlowRing::new(3);
        for port in 1..=5 {
            ring.push(record(port));
        }
        let ports: Vec<u16> = ring
            .snapshot(&FlowFilter::default(), None)
            .iter()
            .map(|r| r.client.port())
            .collect();
        assert_eq!(ports, [3, 4, 5]);
        let last: Vec<u16> = ring
            .snapshot(&FlowFilter::default(), Some(2))
            .iter()
            .map(|r| r.client.port())
            .collect();
        assert_eq!(last, [4, 5]);
    }
}
