"""Tests of the test doubles (dev/fakes): the fake API server and the WeCom sandbox."""
