"""Stage make_default_data: the built-in moving-digits videos -> data/default_videos/{train,test}/<digit>/."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start().default_data
    from videogpt.data.moving_digits import write_moving_digits
    counts = write_moving_digits(paths.DEFAULT_VIDEOS, params)
    print(f"make_default_data: {counts['train']} train + {counts['test']} test videos "
          f"({params.n_frames} frames of {params.resolution}x{params.resolution}) -> {paths.DEFAULT_VIDEOS}")


if __name__ == "__main__":
    run("make_default_data", main)
