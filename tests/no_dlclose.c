/*
 * no_dlclose.c: preloaded in sanitized test runs (tests/meson.build) after the ASan
 * runtime. dlclose() does nothing, so the Open MPI plugins (mca_*.so) stay mapped until
 * exit and LeakSanitizer can name the module of each of their allocations: without it
 * their leaks show as "<unknown module>" (or inside a random library), where no
 * suppression in tests/lsan.supp can reach them.
 */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
