//! An ordered, bounded outbox in front of one SPSC ring.
//!
//! Several tasks on a shard hand messages for the same peer to one outbox. The outbox keeps
//! them in the order they were pushed: it sends straight into the ring while the ring has room
//! and nothing is waiting, and otherwise queues behind the messages already waiting, which one
//! pump task moves into the ring as room appears. Producers call [`Outbox::wait_for_room`]
//! *before* they do the work whose result they push (sequencing a pulse), so the push itself
//! never waits and never reorders.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use event_listener::Event;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::GlommioError;

pub struct Outbox<T: Send + 'static> {
    ring: ConnectedSender<T>,
    waiting: RefCell<VecDeque<T>>,
    capacity: usize,
    /// True while the pump holds a message it is sending: a direct send would overtake it.
    pump_busy: Cell<bool>,
    has_items: Event,
    has_room: Event,
    /// How many times a producer found the outbox full and had to wait.
    full_waits: Cell<u64>,
    closed: Cell<bool>,
}

impl<T: Send + 'static> Outbox<T> {
    pub fn new(ring: ConnectedSender<T>, capacity: usize) -> Rc<Self> {
        Rc::new(Self {
            ring,
            waiting: RefCell::new(VecDeque::new()),
            capacity,
            pump_busy: Cell::new(false),
            has_items: Event::new(),
            has_room: Event::new(),
            full_waits: Cell::new(0),
            closed: Cell::new(false),
        })
    }

    /// True when producers should wait before pushing more.
    pub fn is_full(&self) -> bool {
        self.waiting.borrow().len() >= self.capacity
    }

    /// Waits until a push will not exceed the outbox's capacity.
    pub async fn wait_for_room(&self) {
        if !self.is_full() {
            return;
        }
        self.full_waits.set(self.full_waits.get() + 1);
        while self.is_full() && !self.closed.get() {
            let listener = self.has_room.listen();
            if !self.is_full() {
                break;
            }
            listener.await;
        }
    }

    /// Queues `item` behind everything pushed before it. Never waits.
    pub fn push(&self, item: T) {
        if self.closed.get() {
            return;
        }
        let mut waiting = self.waiting.borrow_mut();
        if waiting.is_empty() && !self.pump_busy.get() {
            match self.ring.try_send(item) {
                Ok(()) => return,
                Err(GlommioError::WouldBlock(glommio::ResourceType::Channel(item))) => {
                    waiting.push_back(item)
                }
                Err(_) => {
                    // The peer shard has gone (shutdown); nothing can be delivered there.
                    self.closed.set(true);
                    return;
                }
            }
        } else {
            waiting.push_back(item);
        }
        drop(waiting);
        self.has_items.notify(1);
    }

    /// Times producers waited for room; for metrics.
    pub fn full_waits(&self) -> u64 {
        self.full_waits.get()
    }

    /// Moves waiting messages into the ring as it frees up. Runs for the life of the shard.
    pub async fn pump(self: Rc<Self>) {
        loop {
            let next = self.waiting.borrow_mut().pop_front();
            match next {
                Some(item) => {
                    self.pump_busy.set(true);
                    let sent = self.ring.send(item).await;
                    self.pump_busy.set(false);
                    self.has_room.notify(usize::MAX);
                    if sent.is_err() {
                        self.closed.set(true);
                        self.waiting.borrow_mut().clear();
                        self.has_room.notify(usize::MAX);
                        return;
                    }
                }
                None => {
                    let listener = self.has_items.listen();
                    if self.waiting.borrow().is_empty() {
                        listener.await;
                    }
                }
            }
        }
    }
}
