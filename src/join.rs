//! Waiting for several futures at once. futures_util's `join_all` switches to a
//! `FuturesUnordered` past 30 futures, and that path alone weighed several KB of wasm; the
//! Worker joins at most a few dozen (the `n` calls of a generation, a queue batch, the
//! inputs read from R2), for which polling each in turn is all it takes.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A future being waited for, and its output once it has one.
type Slot<F> = (Pin<Box<F>>, Option<<F as Future>::Output>);

/// Every future's output, in the order given, once all have finished.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut slots: Vec<Slot<F>> = futures.into_iter().map(|future| (Box::pin(future), None)).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in slots.iter_mut().filter(|(_, output)| output.is_none()) {
            match future.as_mut().poll(cx) {
                Poll::Ready(value) => *output = Some(value),
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, output)| output).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that is pending `polls` times before it gives `value`.
    struct Later {
        polls: u32,
        value: u32,
    }

    impl Future for Later {
        type Output = u32;

        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<u32> {
            if self.polls == 0 {
                return Poll::Ready(self.value);
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return value;
            }
        }
    }

    #[test]
    fn outputs_come_in_the_order_given_whatever_order_they_finish_in() {
        let futures = (0..40).map(|i| Later { polls: (40 - i) % 7, value: i });
        assert_eq!(block_on(join_all(futures)), (0..40).collect::<Vec<_>>());
        assert_eq!(block_on(join_all(Vec::<Later>::new())), Vec::<u32>::new());
    }
}
