"""
End-to-end testing of demux in front of the real Syncthing programs.

Syncthing's relay (C{strelaysrv}), its global discovery server
(C{stdiscosrv}) and Syncthing itself are what the user of
C{examples/syncthing.toml} puts behind one port, so they are what the
end-to-end tests talk to.  This package holds what those tests need and
nothing demux ships:

  - L{tests.syncthing.identity}: device certificates and device IDs;
  - L{tests.syncthing.relayclient}: a relay protocol v1 client written from
    the published specification;
  - L{tests.syncthing.discovery}: a global discovery protocol v3 client;
  - L{tests.syncthing.harness}: starting and stopping the real programs, and
    the demux configuration made from the shipped example.
"""
