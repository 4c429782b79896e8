//! Stream wrappers that only watch or replay reads (the first bytes a peer sent, a request
//! head read ahead) pass every write straight to the stream they wrap.

/// Implements hyper's and futures-io's write traits for `$wrapper<T>` by handing every
/// call to its `inner` field.
macro_rules! writes_through {
    ($wrapper:ident) => {
        impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for $wrapper<T> {
            $crate::writes_through::writes_through!(@each
                poll_write(buf: &[u8]) -> usize;
                poll_write_vectored(bufs: &[std::io::IoSlice<'_>]) -> usize;
                poll_flush() -> ();
                poll_shutdown() -> ();
            );

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }

        impl<T: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for $wrapper<T> {
            $crate::writes_through::writes_through!(@each
                poll_write(buf: &[u8]) -> usize;
                poll_write_vectored(bufs: &[std::io::IoSlice<'_>]) -> usize;
                poll_flush() -> ();
                poll_close() -> ();
            );
        }
    };
    (@each $($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {$(
        fn $name(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            $($arg: $ty),*
        ) -> std::task::Poll<std::io::Result<$out>> {
            std::pin::Pin::new(&mut self.inner).$name(cx, $($arg),*)
        }
    )*};
}

pub(crate) use writes_through;
