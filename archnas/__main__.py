from archnas.utils.lock import follow_parent

follow_parent()  # an --algos child dies with its parent, before the heavy imports below

from archnas.cli import main  # noqa: E402

raise SystemExit(main())
